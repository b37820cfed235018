"""Uploaded query images kept in memory for a while, so that the upload page can search the same
image again under another model or search mode without a second upload: each is keyed by the
SHA-256 of its bytes, with the JPEG preview the page shows beside its results (re-encoded from
the decoded pixels: no metadata of the file is ever sent back). The least recently used are
dropped once the kept bytes pass a budget; nothing is written to disk."""

from __future__ import annotations

import hashlib
import io
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

KEY = re.compile(r"[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class Upload:
    """One kept upload: its bytes (as checked on upload), file name and JPEG preview."""

    key: str
    data: bytes
    filename: str
    preview: bytes

    @property
    def size(self) -> int:
        return len(self.data) + len(self.preview)


def upload_key(data: bytes) -> str:
    """The key of an upload: the SHA-256 of its bytes, in hex."""
    return hashlib.sha256(data).hexdigest()


def preview_jpeg(image: Any, side: int) -> bytes:
    """A JPEG of a decoded PIL image, at most `side` px on its longer side."""
    copy = image.convert("RGB")
    copy.thumbnail((side, side))
    buffer = io.BytesIO()
    copy.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


class UploadCache:
    """The kept uploads, least recently used first, within `budget` bytes (0 keeps none)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.lock = threading.Lock()
        self.kept: OrderedDict[str, Upload] = OrderedDict()
        self.used = 0

    def put(self, upload: Upload) -> bool:
        """Keep an upload (dropping the least recently used past the budget); False when it
        alone is over the budget and is not kept."""
        if upload.size > self.budget:
            return False
        with self.lock:
            old = self.kept.pop(upload.key, None)
            self.used -= old.size if old else 0
            self.kept[upload.key] = upload
            self.used += upload.size
            while self.used > self.budget:
                _key, dropped = self.kept.popitem(last=False)
                self.used -= dropped.size
        return True

    def get(self, key: str) -> Upload | None:
        """A kept upload by key (None for a malformed key or one no longer kept)."""
        if not KEY.match(key):
            return None
        with self.lock:
            upload = self.kept.get(key)
            if upload is not None:
                self.kept.move_to_end(key)
            return upload
