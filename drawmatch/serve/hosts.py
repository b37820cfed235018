"""The host names the workbench answers to (against DNS rebinding).

A page of another site can make its own name resolve to 127.0.0.1; the browser then sends that
name in `Host` (and `Origin`). The workbench answers only requests whose `Host` names it: the
loopback names and the address it listens on (alone or with its port), and the names of a shared
deployment (`allowed_hosts`: `name` admits any port, `name:port` that port only).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

HOST_PATTERN = re.compile(r"^(\[[0-9a-f:.]+\]|[a-z0-9][a-z0-9.-]*)(?::([0-9]{1,5}))?\Z")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")


def split_host(value: str) -> tuple[str, int | None] | None:
    """`name[:port]` -> (lower-case name, port or None); None if it is not a plain host
    (user info, a path, odd characters, a port out of range)."""
    found = HOST_PATTERN.match(value.lower())
    if found is None:
        return None
    port = int(found.group(2)) if found.group(2) else None
    if port is not None and port > 65535:
        return None
    return found.group(1), port


def bracketed(address: str) -> str:
    """An address as it appears in a `Host` header (IPv6 in brackets)."""
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


@dataclass(frozen=True)
class AllowedHosts:
    """`exact`: `Host` values admitted as they are; `any_port`: names admitted with any port."""

    exact: frozenset[str]
    any_port: frozenset[str]

    def admits(self, value: str | None) -> bool:
        """Whether a `Host` value (or an origin's `host[:port]`) names this workbench."""
        parsed = split_host(value) if value and value.isascii() else None
        if parsed is None:
            return False
        assert value is not None
        return value.lower() in self.exact or parsed[0] in self.any_port


def allowed_hosts(bound: str, port: int, extra: Iterable[str] = ()) -> AllowedHosts:
    """The hosts of a workbench listening on `bound:port`: the loopback names and `bound` (never a
    wildcard address), alone or with `port` (any port if `port` is 0), and the `extra` names."""
    local = [*LOOPBACK_NAMES]
    if bound.lower() not in WILDCARD_ADDRESSES:
        local.append(bracketed(bound.lower()))
    exact = {*local, *(f"{name}:{port}" for name in local)}
    any_port = set(local) if port == 0 else set()
    for entry in extra:
        parsed = split_host(entry)
        if parsed is None:
            raise ValueError(f"allowed_hosts: {entry!r} is not a host name (name or name:port)")
        if parsed[1] is None:
            any_port.add(parsed[0])
        else:
            exact.add(entry.lower())
    return AllowedHosts(exact=frozenset(exact), any_port=frozenset(any_port))
