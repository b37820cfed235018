"""Where files live: local paths or object-store URIs, through pyarrow file systems.

Every input and output path of a job (`out`, `drawings_root`, `pairs_csv`, `fold_csv`, ...) may be a
local path or a URI that pyarrow understands: `s3://bucket/key`, `gs://bucket/key`, `hdfs://...`,
`file:///abs/path`. On a cluster, an object-store output root lets workers on many nodes read and
write the same data without a shared file system.

Credentials and endpoints come from the usual environment of each file system (for S3:
`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL` for an
S3-compatible server); on a cluster, pass them to every worker with the job's `runtime_env`.

Writes are whole-file: a local file (plain path or `file://`) is written to a temporary name and
renamed, an object-store object appears only when its upload completes, so a reader never sees a
half-written file.
"""

from __future__ import annotations

import fnmatch
import io
import os
import posixpath
import threading
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

_FILESYSTEMS: dict[str, pafs.FileSystem] = {}
_LOCK = threading.Lock()


def is_uri(path: str | Path) -> bool:
    """True for `scheme://...` (a file system URI), False for a plain local path."""
    return "://" in str(path)


def _split(uri: str) -> tuple[str, str]:
    """`s3://bucket/a/b` -> (`s3://bucket`, `bucket/a/b`): the file system key and pyarrow's path."""
    scheme, rest = uri.split("://", 1)
    if scheme == "file":
        return "file://", rest
    netloc = rest.split("/", 1)[0]
    return f"{scheme}://{netloc}", rest


def filesystem(path: str | Path) -> tuple[pafs.FileSystem, str]:
    """(pyarrow file system, path inside it) for a local path or a URI; one file system per
    scheme and bucket and process (building an S3 one may ask the server for the bucket's region)."""
    text = str(path)
    if not is_uri(text):
        return pafs.LocalFileSystem(), os.path.abspath(text)
    key, inner = _split(text)
    with _LOCK:
        fs = _FILESYSTEMS.get(key)
        if fs is None:
            try:
                fs = pafs.FileSystem.from_uri(text)[0]
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
                raise ValueError(f"{text}: not a usable file system URI ({exc})") from exc
            _FILESYSTEMS[key] = fs
    if key == "file://":
        inner = os.path.abspath(inner)
    return fs, inner.rstrip("/") or "/"


def absolute(path: str | Path) -> str:
    """A path every process can use: a local path made absolute, a URI unchanged."""
    text = str(path)
    return text.rstrip("/") if is_uri(text) else str(Path(text).resolve())


def join(root: str | Path, *parts: str) -> str:
    """`root/part/...` for a local path or a URI (URIs always use `/`)."""
    text = str(root)
    if is_uri(text):
        pieces = [p.strip("/") for p in parts if p and p.strip("/")]
        return "/".join([text.rstrip("/"), *pieces])
    return os.path.join(text, *parts)


def name(path: str | Path) -> str:
    """Last part of a path or URI (`.../fold_00.csv` -> `fold_00.csv`)."""
    return posixpath.basename(str(path).rstrip("/")) if is_uri(path) else Path(path).name


def stem(path: str | Path) -> str:
    return posixpath.splitext(name(path))[0]


def parent(path: str | Path) -> str:
    text = str(path).rstrip("/")
    return text.rsplit("/", 1)[0] if is_uri(text) else str(Path(text).parent)


def _info(path: str | Path) -> pafs.FileInfo:
    fs, inner = filesystem(path)
    return fs.get_file_info(inner)


def exists(path: str | Path) -> bool:
    return bool(_info(path).type != pafs.FileType.NotFound)


def is_file(path: str | Path) -> bool:
    return bool(_info(path).type == pafs.FileType.File)


def is_dir(path: str | Path) -> bool:
    return bool(_info(path).type == pafs.FileType.Directory)


def size(path: str | Path) -> int:
    """Size in bytes; FileNotFoundError if there is no such file."""
    if not is_uri(path):
        return os.stat(path).st_size
    info = _info(path)
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(f"no file at {path}")
    return int(info.size)


def read_bytes(path: str | Path) -> bytes:
    fs, inner = filesystem(path)
    try:
        with fs.open_input_stream(inner) as fh:
            return bytes(fh.read())
    except FileNotFoundError:
        raise
    except OSError as exc:
        if _info(path).type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"no file at {path}") from exc
        raise


def read_text(path: str | Path) -> str:
    return read_bytes(path).decode("utf-8")


def open_input(path: str | Path) -> Any:
    """A binary file object to read from (a random-access one: PIL and pyarrow seek in it).
    A remote file is fetched whole, in one request: a decoder's many small reads would each be
    a ranged request to the object store."""
    if not is_uri(path):
        return open(path, "rb")
    return io.BytesIO(read_bytes(path))


def makedirs(path: str | Path) -> None:
    """Create a local folder and its parents; object stores have no folders, so nothing to do."""
    fs, inner = filesystem(path)
    if isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(inner, recursive=True)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write a whole file: locally through a temporary file and a rename, to an object store as
    one upload (the object appears when it completes)."""
    fs, inner = filesystem(path)
    if isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(posixpath.dirname(inner) or "/", recursive=True)
        tmp = posixpath.join(
            posixpath.dirname(inner), f".{posixpath.basename(inner)}.tmp-{uuid.uuid4().hex[:8]}"
        )
        with fs.open_output_stream(tmp) as fh:
            fh.write(data)
        fs.move(tmp, inner)
        return
    with fs.open_output_stream(inner) as fh:
        fh.write(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def remove(path: str | Path) -> None:
    fs, inner = filesystem(path)
    fs.delete_file(inner)


def _rebuild(path: str | Path, inner: str) -> str:
    """A path pyarrow returned (`bucket/key`, `/abs`) as a path or URI of the same kind as `path`."""
    text = str(path)
    if not is_uri(text):
        return inner
    scheme = text.split("://", 1)[0]
    return f"{scheme}://{inner}"


def list_files(directory: str | Path, pattern: str = "*", recursive: bool = False) -> list[str]:
    """Sorted files under `directory` whose path relative to it matches `pattern` like a glob
    (`*` stays within one folder level: `*/model.json` needs `recursive=True`); an empty list if
    the folder does not exist."""
    fs, inner = filesystem(directory)
    selector = pafs.FileSelector(inner, allow_not_found=True, recursive=recursive)
    found = []
    for info in fs.get_file_info(selector):
        if info.type != pafs.FileType.File:
            continue
        rel = posixpath.relpath(info.path, inner) if inner != "/" else info.path.lstrip("/")
        if rel.count("/") == pattern.count("/") and fnmatch.fnmatchcase(rel, pattern):
            found.append(_rebuild(directory, info.path))
    return sorted(found)


def read_parquet(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    fs, inner = filesystem(path)
    return pq.read_table(inner, columns=columns, filesystem=fs)


def write_parquet(table: pa.Table, path: str | Path) -> None:
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    write_bytes(path, buf.getvalue().to_pybytes())


def read_csv(path: str | Path, **kwargs: Any) -> pd.DataFrame:
    """`pandas.read_csv` of a local file or a URI."""
    if not is_uri(path):
        return pd.read_csv(path, **kwargs)
    return pd.read_csv(io.BytesIO(read_bytes(path)), **kwargs)
