"""The annotation store: `annotations.sqlite` under the output root (SQLite, WAL mode).

One row per decision, appended and never overwritten: drawing id, artwork id, decision (`match`,
`non-match`, `skip`), annotator, time (UTC, ISO 8601), the model tag, 1-based rank and distance at
which the pair was shown, and a note. The current state of a pair is its latest decision (highest
`seq`). Many clients and processes may write at once: every write is one short `BEGIN IMMEDIATE`
transaction on its own connection, with a busy timeout, so writers queue instead of failing with
"database is locked".

`export_pairs` writes the pairs whose latest decision is `match` in the pairs CSV contract
(`drawing_id, artwork_id, keep, parent_id`) that `split` and `train` read.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from drawmatch.core import storage

DB_FILE = "annotations.sqlite"
DECISIONS = ("match", "non-match", "skip")
BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    drawing_id TEXT NOT NULL,
    artwork_id TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('match', 'non-match', 'skip')),
    annotator TEXT NOT NULL,
    time TEXT NOT NULL,
    model TEXT,
    rank INTEGER,
    distance REAL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS decisions_pair ON decisions (drawing_id, artwork_id, seq);
CREATE INDEX IF NOT EXISTS decisions_artwork ON decisions (artwork_id, seq);
DROP VIEW IF EXISTS current;
CREATE VIEW current AS
    SELECT d.* FROM decisions d
    WHERE d.seq = (
        SELECT MAX(x.seq) FROM decisions x
        WHERE x.drawing_id = d.drawing_id AND x.artwork_id = d.artwork_id
    );
"""
COLUMNS = (
    "seq",
    "drawing_id",
    "artwork_id",
    "decision",
    "annotator",
    "time",
    "model",
    "rank",
    "distance",
    "note",
)


@dataclass(frozen=True)
class Decision:
    """One stored decision; `rank` is 1-based (as shown), `time` ISO 8601 UTC."""

    seq: int
    drawing_id: str
    artwork_id: str
    decision: str
    annotator: str
    time: str
    model: str | None
    rank: int | None
    distance: float | None
    note: str


def db_path(out: str | Path) -> str:
    return storage.join(out, DB_FILE)


class AnnotationStore:
    """Append-only decisions in one SQLite file (a local path: SQLite needs a real file system)."""

    def __init__(self, path: str | Path) -> None:
        if storage.is_uri(path) and not str(path).startswith("file://"):
            raise ValueError(
                f"{path}: the annotation database needs a local file system (SQLite); "
                "serve from a local or mounted output root"
            )
        self.path = str(path).removeprefix("file://")
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        try:
            yield conn
        finally:
            conn.close()

    def add(
        self,
        drawing_id: str,
        artwork_id: str,
        decision: str,
        annotator: str,
        model: str | None = None,
        rank: int | None = None,
        distance: float | None = None,
        note: str = "",
    ) -> Decision:
        """Append one decision in its own short transaction; returns it with its `seq`."""
        if decision not in DECISIONS:
            raise ValueError(f"decision {decision!r} is not one of {', '.join(DECISIONS)}")
        if not annotator:
            raise ValueError("a decision needs an annotator")
        time = datetime.now(UTC).isoformat(timespec="milliseconds")
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            cur = conn.execute(
                "INSERT INTO decisions (drawing_id, artwork_id, decision, annotator, time, model,"
                " rank, distance, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (drawing_id, artwork_id, decision, annotator, time, model, rank, distance, note),
            )
            seq = int(cur.lastrowid or 0)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()
        return Decision(
            seq, drawing_id, artwork_id, decision, annotator, time, model, rank, distance, note
        )

    def _rows(self, sql: str, params: Iterable[object] = ()) -> list[Decision]:
        with self._read() as conn:
            return [Decision(*row) for row in conn.execute(sql, tuple(params))]

    def history(
        self, drawing_id: str | None = None, artwork_id: str | None = None
    ) -> list[Decision]:
        """Every decision (optionally of one drawing and/or artwork), oldest first."""
        where, params = _where(drawing_id, artwork_id)
        return self._rows(f"SELECT {', '.join(COLUMNS)} FROM decisions{where} ORDER BY seq", params)

    def current(
        self, drawing_id: str | None = None, artwork_id: str | None = None
    ) -> list[Decision]:
        """The latest decision of every pair (optionally of one drawing and/or artwork)."""
        where, params = _where(drawing_id, artwork_id)
        return self._rows(f"SELECT {', '.join(COLUMNS)} FROM current{where} ORDER BY seq", params)

    def current_by_pair(self, drawing_id: str) -> dict[str, Decision]:
        """artwork id -> latest decision, for one drawing."""
        return {d.artwork_id: d for d in self.current(drawing_id=drawing_id)}

    def decided_pairs(self) -> set[tuple[str, str]]:
        """(drawing id, artwork id) of every pair with any decision (skips included)."""
        with self._read() as conn:
            return {(d, a) for d, a in conn.execute("SELECT drawing_id, artwork_id FROM current")}

    def drawing_states(self, ids: list[str] | None = None) -> dict[str, str]:
        """drawing id -> `match` if any of its pairs' latest decision is a match, else
        `annotated` (it has decisions, none a current match); optionally only for `ids`."""
        sql = "SELECT drawing_id, MAX(decision = 'match') FROM current"
        params: list[str] = []
        if ids is not None:
            if not ids:
                return {}
            sql += f" WHERE drawing_id IN ({', '.join('?' * len(ids))})"
            params = list(ids)
        with self._read() as conn:
            rows = conn.execute(sql + " GROUP BY drawing_id", params).fetchall()
        return {d: ("match" if m else "annotated") for d, m in rows}

    def count(self) -> int:
        with self._read() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0])

    def matches(self, annotators: Iterable[str] = ()) -> pd.DataFrame:
        """Pairs whose latest decision is `match` (optionally: made by one of `annotators`)."""
        rows = [d for d in self.current() if d.decision == "match"]
        names = set(annotators)
        if names:
            rows = [d for d in rows if d.annotator in names]
        return pd.DataFrame(
            [(d.drawing_id, d.artwork_id, d.annotator, d.time) for d in rows],
            columns=["drawing_id", "artwork_id", "annotator", "time"],
        )


def _where(drawing_id: str | None, artwork_id: str | None) -> tuple[str, list[object]]:
    clauses: list[str] = []
    params: list[object] = []
    if drawing_id is not None:
        clauses.append("drawing_id = ?")
        params.append(drawing_id)
    if artwork_id is not None:
        clauses.append("artwork_id = ?")
        params.append(artwork_id)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def pairs_frame(
    store: AnnotationStore, allowed: set[str] | None = None, annotators: Iterable[str] = ()
) -> pd.DataFrame:
    """Current matches as a pairs table (`drawing_id, artwork_id, keep, parent_id`), sorted;
    pairs naming an id outside `allowed` (versos, ids no longer catalogued) are left out."""
    found = store.matches(annotators)
    if allowed is not None:
        found = found[found["drawing_id"].isin(allowed) & found["artwork_id"].isin(allowed)]
    table = found[["drawing_id", "artwork_id"]].copy()
    table["keep"] = "true"
    table["parent_id"] = ""
    return table.sort_values(["drawing_id", "artwork_id"]).reset_index(drop=True)


def pairs_csv_text(table: pd.DataFrame) -> str:
    return str(table.to_csv(index=False, lineterminator="\n"))
