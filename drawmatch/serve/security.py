"""Who is annotating, and protection of state-changing requests.

- A session is a signed cookie (HMAC-SHA256 with a secret kept under the output root) holding the
  annotator's name and a per-session CSRF token; HttpOnly, SameSite=Strict.
- Annotators identify themselves: by a name (local use) or, in a shared deployment, by a token
  from `tokens_csv` (`annotator,token` lines); the name then comes from the token's line.
- Every state-changing request must carry the session's CSRF token (the `X-CSRF-Token` header
  that htmx sends, or a `csrf_token` form field) and, when the browser says where it comes
  from (`Origin`, `Sec-Fetch-Site`), come from this site: an `Origin` naming one of the hosts
  the workbench was started for.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd

from drawmatch.serve.hosts import AllowedHosts

SESSION_COOKIE = "dm_session"
LOGIN_COOKIE = "dm_login"
CSRF_HEADER = "x-csrf-token"
SESSION_MAX_AGE = 14 * 24 * 3600
NAME_PATTERN = re.compile(r"^[^\W_][\w .'@-]{0,63}\Z")


@dataclass(frozen=True)
class Session:
    annotator: str
    csrf: str


def load_secret(out: str) -> bytes:
    """The signing secret kept in `out/.serve_secret` (made on first use, mode 0600), so sessions
    survive a restart; a random one per process if the output root is not a local folder."""
    if "://" in out and not out.startswith("file://"):
        return secrets.token_bytes(32)
    path = Path(out.removeprefix("file://")) / ".serve_secret"
    if path.exists():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return data


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self.secret, payload.encode(), hashlib.sha256).digest())

    def session_cookie(self, annotator: str) -> tuple[str, Session]:
        session = Session(annotator=annotator, csrf=secrets.token_urlsafe(24))
        payload = _b64(
            json.dumps({"a": annotator, "c": session.csrf, "t": int(time.time())}).encode()
        )
        return f"{payload}.{self._mac(payload)}", session

    def read_session(self, cookie: str | None) -> Session | None:
        if not cookie or cookie.count(".") != 1 or len(cookie) > 4096:
            return None
        payload, mac = cookie.split(".")
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            data = json.loads(_unb64(payload))
            annotator, csrf, issued = str(data["a"]), str(data["c"]), int(data["t"])
        except (ValueError, KeyError, TypeError):
            return None
        if time.time() - issued > SESSION_MAX_AGE or not valid_name(annotator):
            return None
        return Session(annotator=annotator, csrf=csrf)


def valid_name(name: str) -> bool:
    return bool(NAME_PATTERN.match(name))


def read_tokens(path: str) -> dict[str, str]:
    """token -> annotator from a CSV with columns `annotator, token` (tokens >= 16 characters)."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table.columns = [c.strip() for c in table.columns]
    if {"annotator", "token"} - set(table.columns):
        raise ValueError(f"{path}: needs columns annotator, token")
    tokens: dict[str, str] = {}
    for i, (name, token) in enumerate(zip(table["annotator"], table["token"])):
        name, token = name.strip(), token.strip()
        if not valid_name(name):
            raise ValueError(f"{path} row {i + 2}: {name!r} is not a usable annotator name")
        if len(token) < 16:
            raise ValueError(f"{path} row {i + 2}: tokens must have at least 16 characters")
        tokens[token] = name
    if not tokens:
        raise ValueError(f"{path}: no annotator tokens")
    return tokens


def annotator_for_token(tokens: dict[str, str], given: str) -> str | None:
    """The annotator whose token is `given` (compared in constant time against every token)."""
    found = None
    for token, name in tokens.items():
        if hmac.compare_digest(token.encode(), given.encode()):
            found = name
    return found


def same_origin(headers: dict[str, str], hosts: AllowedHosts) -> bool:
    """False if the browser says the request comes from another site: `Sec-Fetch-Site` other
    than same-origin, or an `Origin` that does not name one of this workbench's `hosts` (never
    compared with the request's own `Host`, which a rebound name controls)."""
    if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = headers.get("origin")
    if origin is None:
        return True
    if not origin.isascii() or not origin.isprintable() or " " in origin:
        return False  # urlsplit drops tabs and newlines, so refuse them before it can
    try:
        parts = urlsplit(origin)
    except ValueError:  # a malformed bracketed address
        return False
    if parts.scheme not in ("http", "https") or parts.path or parts.query or parts.fragment:
        return False
    return hosts.admits(parts.netloc)


def csrf_ok(session: Session | None, given: str | None) -> bool:
    return bool(session and given and hmac.compare_digest(session.csrf, given))
