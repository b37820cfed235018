"""The annotation store: `annotations.sqlite` under the output root (SQLite, WAL mode).

One row per decision, appended and never overwritten or deleted: drawing id, artwork id, decision
(`match`, `non-match`, `skip`, or `undo`), annotator, time (UTC, ISO 8601), the model tag, 1-based
rank and distance at which the pair was shown, a note, its `source` and, for an undo, the `seq` of
the row it `undoes`. Sources: `workbench` (a decision made in the workbench), `imported` (a known
pair read from a pairs file: `annotator` is the file's name), `settle` (the decision that settles
a double-review disagreement).

An undo row cancels the row it names: the *effective* rows are the decisions no undo names, and
the current state of a pair is its latest effective row (highest `seq`); a pair whose every row
was undone is undecided again. Many clients and processes may write at once: every write is one
short `BEGIN IMMEDIATE` transaction on its own connection, with a busy timeout, so writers queue
instead of failing with "database is locked".

`pairs_frame` gives the pairs whose current decision is `match` in the pairs CSV contract
(`drawing_id, artwork_id, keep, parent_id`) that `split` and `train` read; `negatives_frame` the
pairs whose current decision is `non-match`.
"""

from __future__ import annotations

import dataclasses
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
SOURCES = ("workbench", "imported", "settle")
IMPORTED = "imported"
BUSY_TIMEOUT_MS = 30_000

_TABLE = """
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    drawing_id TEXT NOT NULL,
    artwork_id TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('match', 'non-match', 'skip', 'undo')),
    annotator TEXT NOT NULL,
    time TEXT NOT NULL,
    model TEXT,
    rank INTEGER,
    distance REAL,
    note TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT 'workbench'
        CHECK (source IN ('workbench', 'imported', 'settle')),
    undoes INTEGER
);
"""
_SCHEMA = """
CREATE INDEX IF NOT EXISTS decisions_pair ON decisions (drawing_id, artwork_id, seq);
CREATE INDEX IF NOT EXISTS decisions_artwork ON decisions (artwork_id, seq);
CREATE INDEX IF NOT EXISTS decisions_annotator ON decisions (annotator, seq);
CREATE INDEX IF NOT EXISTS decisions_undoes ON decisions (undoes);
CREATE VIEW effective AS
    SELECT * FROM decisions
    WHERE decision != 'undo'
      AND seq NOT IN (SELECT undoes FROM decisions WHERE undoes IS NOT NULL);
CREATE VIEW current AS
    SELECT e.* FROM effective e
    WHERE e.seq = (
        SELECT MAX(x.seq) FROM effective x
        WHERE x.drawing_id = e.drawing_id AND x.artwork_id = e.artwork_id
    );
"""
_OLD_COLUMNS = "seq, drawing_id, artwork_id, decision, annotator, time, model, rank, distance, note"
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
    "source",
    "undoes",
)


@dataclass(frozen=True)
class Decision:
    """One stored decision; `rank` is 1-based (as shown), `time` ISO 8601 UTC; `undoes` the `seq`
    an undo row cancels."""

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
    source: str = "workbench"
    undoes: int | None = None


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
        conn = self._connect()  # WAL is a property of the file, set outside a transaction
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        finally:
            conn.close()
        with self._write() as conn:
            conn.execute("DROP VIEW IF EXISTS current")
            conn.execute("DROP VIEW IF EXISTS effective")
            columns = {row[1] for row in conn.execute("PRAGMA table_info(decisions)")}
            if columns and "source" not in columns:  # a store from before undo and imports
                conn.execute("ALTER TABLE decisions RENAME TO decisions_before_undo")
                conn.execute(_TABLE)
                conn.execute(
                    f"INSERT INTO decisions ({_OLD_COLUMNS}) "
                    f"SELECT {_OLD_COLUMNS} FROM decisions_before_undo"
                )
                conn.execute("DROP TABLE decisions_before_undo")
            conn.execute(_TABLE)
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)

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
        source: str = "workbench",
    ) -> Decision:
        """Append one decision in its own short transaction; returns it with its `seq`."""
        if decision not in DECISIONS:
            raise ValueError(f"decision {decision!r} is not one of {', '.join(DECISIONS)}")
        if source not in SOURCES:
            raise ValueError(f"source {source!r} is not one of {', '.join(SOURCES)}")
        if not annotator:
            raise ValueError("a decision needs an annotator")
        row = Decision(
            0,
            drawing_id,
            artwork_id,
            decision,
            annotator,
            _now(),
            model,
            rank,
            distance,
            note,
            source,
        )
        with self._write() as conn:
            return self._insert(conn, row)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short `BEGIN IMMEDIATE` transaction (committed, or rolled back on an error)."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    @staticmethod
    def _insert(conn: sqlite3.Connection, row: Decision) -> Decision:
        names = COLUMNS[1:]
        cur = conn.execute(
            f"INSERT INTO decisions ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
            tuple(getattr(row, n) for n in names),
        )
        return dataclasses.replace(row, seq=int(cur.lastrowid or 0))

    def undo(self, annotator: str) -> tuple[Decision, Decision]:
        """Cancel `annotator`'s latest decision that is not undone yet (an `undo` row naming it;
        nothing is deleted): the pair is back to the state it had before, or to the later
        decision of someone else. Pressed again, the decision before that one. Returns (the undo
        row, the decision it cancels); ValueError when there is nothing left to undo."""
        with self._write() as conn:
            found = conn.execute(
                f"SELECT {', '.join(COLUMNS)} FROM effective WHERE annotator = ? AND source != ?"
                " ORDER BY seq DESC LIMIT 1",
                (annotator, IMPORTED),
            ).fetchone()
            if found is None:
                raise ValueError(f"nothing to undo: {annotator} has no decision left to undo")
            target = Decision(*found)
            row = Decision(
                0,
                target.drawing_id,
                target.artwork_id,
                "undo",
                annotator,
                _now(),
                target.model,
                target.rank,
                target.distance,
                "",
                target.source,
                target.seq,
            )
            return self._insert(conn, row), target

    def import_pairs(self, name: str, pairs: pd.DataFrame) -> tuple[int, int, int]:
        """Record the pairs of the pairs file `name` (its file name) as `match` rows of source
        `imported`, once: a pair this file was already imported with, or that the workbench
        already decides (match or non-match), is left as it is. Returns (added, already
        imported, already decided)."""
        added = seen = decided = 0
        with self._write() as conn:
            before = {
                (d, a)
                for d, a in conn.execute(
                    "SELECT drawing_id, artwork_id FROM decisions WHERE source = ? AND annotator = ?",
                    (IMPORTED, name),
                )
            }
            known = {
                (d, a)
                for d, a in conn.execute(
                    "SELECT drawing_id, artwork_id FROM current WHERE decision IN"
                    " ('match', 'non-match')"
                )
            }
            now = _now()
            for d, a in zip(pairs["drawing_id"].astype(str), pairs["artwork_id"].astype(str)):
                if (d, a) in before:
                    seen += 1
                elif (d, a) in known:
                    decided += 1
                else:
                    row = Decision(0, d, a, "match", name, now, None, None, None, "", IMPORTED)
                    self._insert(conn, row)
                    before.add((d, a))
                    added += 1
        return added, seen, decided

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

    def pair_states(self) -> dict[tuple[str, str], tuple[str, int]]:
        """(drawing id, artwork id) -> (current decision, its `seq`) of every decided pair, in
        one query (the review queue reads all three sets below from it)."""
        with self._read() as conn:
            rows = conn.execute("SELECT drawing_id, artwork_id, decision, seq FROM current")
            return {(d, a): (str(dec), int(seq)) for d, a, dec, seq in rows}

    def decided_pairs(self) -> set[tuple[str, str]]:
        """(drawing id, artwork id) of every pair whose current decision is a match or a
        non-match (imported pairs included; skips are not decided)."""
        return decided_of(self.pair_states())

    def matching_pairs(self) -> set[tuple[str, str]]:
        """(drawing id, artwork id) of every pair whose current decision is a match."""
        return {p for p, (dec, _seq) in self.pair_states().items() if dec == "match"}

    def skipped_pairs(self) -> dict[tuple[str, str], int]:
        """(drawing id, artwork id) -> `seq` of every pair whose current decision is a skip."""
        return skipped_of(self.pair_states())

    def effective(self) -> list[Decision]:
        """Every decision no undo cancels, oldest first."""
        return self._rows(f"SELECT {', '.join(COLUMNS)} FROM effective ORDER BY seq")

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
        """Pairs whose current decision is `match` (optionally: made by one of `annotators`;
        imported pairs are kept whatever `annotators` says)."""
        rows = _kept(self.current(), "match", annotators)
        return pd.DataFrame(
            [(d.drawing_id, d.artwork_id, d.annotator, d.time, d.source) for d in rows],
            columns=["drawing_id", "artwork_id", "annotator", "time", "source"],
        )


def _kept(rows: list[Decision], decision: str, annotators: Iterable[str]) -> list[Decision]:
    """The rows of `decision`, made by one of `annotators` (all if empty) or imported."""
    names = set(annotators)
    return [
        d
        for d in rows
        if d.decision == decision and (not names or d.annotator in names or d.source == IMPORTED)
    ]


def decided_of(states: dict[tuple[str, str], tuple[str, int]]) -> set[tuple[str, str]]:
    """The pairs of `AnnotationStore.pair_states` whose current decision is not a skip."""
    return {p for p, (dec, _seq) in states.items() if dec != "skip"}


def skipped_of(states: dict[tuple[str, str], tuple[str, int]]) -> dict[tuple[str, str], int]:
    """The pairs of `AnnotationStore.pair_states` whose current decision is a skip -> its seq."""
    return {p: seq for p, (dec, seq) in states.items() if dec == "skip"}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


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
    rows = [d for d in _kept(store.current(), "match", annotators) if _allowed(d, allowed)]
    table = pd.DataFrame(
        [(d.drawing_id, d.artwork_id) for d in rows], columns=["drawing_id", "artwork_id"]
    )
    table["keep"] = "true"
    table["parent_id"] = ""
    return table.sort_values(["drawing_id", "artwork_id"]).reset_index(drop=True)


NEGATIVE_COLUMNS = (
    "drawing_id",
    "artwork_id",
    "annotator",
    "decided_at",
    "source",
    "model",
    "rank",
    "distance",
)


def negatives_frame(
    store: AnnotationStore, allowed: set[str] | None = None, annotators: Iterable[str] = ()
) -> pd.DataFrame:
    """Current non-matches (experts' confirmed negatives) with who decided them, when, with
    which source, and the model, rank and distance at which the pair was shown; sorted."""
    rows = [d for d in _kept(store.current(), "non-match", annotators) if _allowed(d, allowed)]
    table = pd.DataFrame(
        [
            (d.drawing_id, d.artwork_id, d.annotator, d.time, d.source, d.model, d.rank, d.distance)
            for d in rows
        ],
        columns=list(NEGATIVE_COLUMNS),
    )
    table["rank"] = table["rank"].astype("Int64")
    return table.sort_values(["drawing_id", "artwork_id"]).reset_index(drop=True)


@dataclass(frozen=True)
class ExportCounts:
    """What an export keeps, pair by pair (by current decision, among allowed ids)."""

    imported_kept: int  # imported pairs still current matches
    decided_matches: int  # matches decided in the workbench (settled ones included)
    non_matches: int  # current non-matches: negatives.csv
    rejected_imports: int  # imported pairs whose current decision is a workbench non-match
    skipped: int  # pairs whose current decision is a skip (exported in neither file)
    left_out: int  # pairs naming a verso or an id the catalogue no longer holds


def export_counts(
    store: AnnotationStore, allowed: set[str] | None = None, annotators: Iterable[str] = ()
) -> ExportCounts:
    """The counts an export reports (see `ExportCounts`)."""
    current = store.current()
    shown = [d for d in current if _allowed(d, allowed)]
    matches = _kept(shown, "match", annotators)
    non_matches = _kept(shown, "non-match", annotators)
    imported = {(d.drawing_id, d.artwork_id) for d in store.effective() if d.source == IMPORTED}
    return ExportCounts(
        imported_kept=sum(d.source == IMPORTED for d in matches),
        decided_matches=sum(d.source != IMPORTED for d in matches),
        non_matches=len(non_matches),
        rejected_imports=sum((d.drawing_id, d.artwork_id) in imported for d in non_matches),
        skipped=sum(d.decision == "skip" for d in shown),
        left_out=len(current) - len(shown),
    )


def _allowed(d: Decision, allowed: set[str] | None) -> bool:
    return allowed is None or (d.drawing_id in allowed and d.artwork_id in allowed)


def read_known_pairs(
    paths: Iterable[str], catalogue: pd.DataFrame
) -> list[tuple[str, pd.DataFrame]]:
    """The kept pairs of each pairs file (its file name, its pairs), checked against the
    catalogue before anything is imported: one PairsError names every unknown id, every id in
    the wrong column and every pair naming a verso or an image in error."""
    from drawmatch.data import catalogue as cat
    from drawmatch.data.pairs import PairsError, check_collections, check_known, read_pairs

    found = []
    ids = set(catalogue["id"].astype(str))
    collection_of = dict(zip(catalogue["id"].astype(str), catalogue["collection"]))
    usable = set(catalogue.loc[cat.usable(catalogue), "id"].astype(str))
    for path in paths:
        pairs = read_pairs(path)
        check_known(pairs, ids, where=str(path))
        check_collections(pairs, collection_of, where=str(path))
        named = sorted((set(pairs["drawing_id"]) | set(pairs["artwork_id"])) - usable)
        if named:
            raise PairsError(
                f"{path} names {len(named)} id(s) that are versos or images in error, never "
                f"shown: {', '.join(named[:20])}"
            )
        found.append((storage.name(path), pairs))
    return found


def cohen_kappa(first: list[str], second: list[str]) -> float | None:
    """Cohen's kappa of two raters' labels of the same items (`first[i]`, `second[i]`):
    (observed agreement - chance agreement) / (1 - chance agreement), chance agreement from
    each rater's own label frequencies. None without items or when chance agreement is 1 (both
    raters gave one and the same label throughout: kappa is undefined)."""
    if len(first) != len(second):
        raise ValueError("the two raters must label the same items")
    n = len(first)
    if n == 0:
        return None
    observed = sum(a == b for a, b in zip(first, second)) / n
    labels = set(first) | set(second)
    chance = sum((first.count(lab) / n) * (second.count(lab) / n) for lab in labels)
    if chance >= 1.0:
        return None
    return (observed - chance) / (1.0 - chance)


def pairs_csv_text(table: pd.DataFrame) -> str:
    return str(table.to_csv(index=False, lineterminator="\n"))
