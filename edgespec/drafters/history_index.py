"""The history index: the user's past report texts and their token ids, in SQLite (the durable store
behind the history drafter).

Report texts live in tables ``history_*``, inside the fieldlog database when
one is given, else a per-user file, with their tokenization per oracle
tokenizer (``model_id``), bounded in size with oldest-first eviction. Texts are
model-independent, so a report saved while no model is loaded, or a switch to
another oracle, is tokenized lazily the next time a drafter for that tokenizer
opens the index. A new index can be seeded with template reports (the domain
gives them: ``vineyard.seeds.template_reports``) so the first report on a device
already drafts well; by default it starts empty.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .. import EdgespecError

DEFAULT_MAX_DOCS = 500
DEFAULT_MAX_TOKENS = 120_000  # per model_id (tokenizer), ~360 reports: keeps the in-memory automaton < ~50 MB
MAX_REPORT_CHARS = 100_000  # one report; anything longer is not a scouting report
SCHEMA_VERSION = 1
# Tokenized once per model_id; a changed result means the tokenizer behind that id changed.
_PROBE_TEXT = "Summary: 4 of 50 clusters (8%) infested with grape berry moth larvae in block B4, rows 12-18."

TokenizeFn = Callable[[str], list[int]]
SeedFn = Callable[[], Iterable[tuple[str, str]]]  # -> (name, text) of each seed report


class HistoryError(EdgespecError, ValueError):
    """The history index cannot be opened or was given bad input."""


def require_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise HistoryError(f"{name} must be a positive integer, got {value!r}")


def require_model_id(model_id) -> None:
    """A tokenizer's name: the key its token ids are stored under."""
    if not isinstance(model_id, str) or not model_id:
        raise HistoryError(f"model_id must be a non-empty string, got {model_id!r}")


def default_db_path() -> Path:
    """The per-user history file used when no fieldlog database is given."""
    import platformdirs

    return Path(platformdirs.user_data_dir("edgespec")) / "history.db"


def no_seed() -> list[tuple[str, str]]:
    """The default seed: none (the runtime knows no domain's reports)."""
    return []


def reports_in(folder) -> list[tuple[str, str]]:
    """(name, text) of every non-empty ``*.txt`` in ``folder`` (a path or an importlib resource), in name order."""
    root = folder if hasattr(folder, "iterdir") else Path(folder)
    out = []
    if not root.is_dir():
        return out
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".txt"):
            text = entry.read_text(encoding="utf-8").strip()
            if text:
                out.append((entry.name, text))
    return out


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_tokens(tokens, what: str) -> np.ndarray:
    try:
        arr = np.asarray(tokens)
    except Exception as e:  # noqa: BLE001 - any non-array-like is a caller error
        raise HistoryError(f"{what}: tokenizer returned {type(tokens).__name__}, not token ids ({e})") from None
    if arr.size == 0:
        return np.zeros(0, dtype="<i4")
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise HistoryError(f"{what}: tokenizer must return a flat list of integer token ids")
    if int(arr.min()) < 0 or int(arr.max()) >= 2**31:
        raise HistoryError(f"{what}: token ids out of range")
    return arr.astype("<i4")


class HistoryIndex:
    """Past report texts and their per-tokenizer token ids, in SQLite, bounded in size.

    Bounds: at most ``max_docs`` reports in all, and at most ``max_tokens`` tokens
    per ``model_id``. When a bound is exceeded the oldest reports are evicted
    (adding a text that is already stored refreshes it to newest, so the order is
    least-recently-saved first). Eviction removes only history entries, never the
    fieldlog ``reports`` rows they came from.

    ``db_path``: the fieldlog database (tables are named ``history_*``), ``None``
    for the per-user default file, or ``":memory:"`` for tests. The connection is
    shared between threads behind a lock (the app saves reports from one thread
    and generates from another).

    ``templates``: what an empty index is seeded with (``seed_templates``), a
    callable returning (name, text) pairs; by default none (``no_seed``). It is
    called only when the index is empty.
    """

    def __init__(
        self,
        db_path: str | Path | None = None,
        *,
        max_docs: int = DEFAULT_MAX_DOCS,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        seed_templates: bool = True,
        templates: SeedFn = no_seed,
    ):
        require_positive_int("max_docs", max_docs)
        require_positive_int("max_tokens", max_tokens)
        if not callable(templates):
            raise HistoryError("templates must be callable (-> (name, text) pairs of the seed reports)")
        self.max_docs = max_docs
        self.max_tokens = max_tokens
        self.templates = templates
        if db_path is None:
            path = default_db_path()
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise HistoryError(f"cannot create the history directory {path.parent}: {e}") from None
            db_path = path
        self.path = str(db_path)
        if self.path != ":memory:" and Path(self.path).is_dir():
            raise HistoryError(f"{self.path}: is a directory, not a database file")
        self._lock = threading.RLock()
        self._changes = 0  # bumped on every commit through this object
        try:
            self._db = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False, isolation_level=None)
            self._create_schema()
        except sqlite3.DatabaseError as e:
            raise HistoryError(f"{self.path}: cannot open the history index ({e})") from None
        if seed_templates and self.count() == 0:
            self.seed_templates()

    # -- plumbing -------------------------------------------------------------------------------------------------

    def _create_schema(self) -> None:
        with self._lock:
            self._db.executescript(
                """
                CREATE TABLE IF NOT EXISTS history_docs (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    sha256 TEXT NOT NULL UNIQUE,
                    text TEXT NOT NULL,
                    source TEXT NOT NULL DEFAULT 'report',
                    seq INTEGER NOT NULL
                );
                CREATE INDEX IF NOT EXISTS history_docs_seq ON history_docs(seq);
                CREATE TABLE IF NOT EXISTS history_tokens (
                    model_id TEXT NOT NULL,
                    doc_id INTEGER NOT NULL,
                    n_tokens INTEGER NOT NULL,
                    tokens BLOB NOT NULL,
                    PRIMARY KEY (model_id, doc_id)
                );
                CREATE TABLE IF NOT EXISTS history_models (
                    model_id TEXT PRIMARY KEY,
                    probe TEXT NOT NULL
                );
                CREATE TABLE IF NOT EXISTS history_meta (key TEXT PRIMARY KEY, value TEXT);
                """
            )
            row = self._db.execute("SELECT value FROM history_meta WHERE key='schema_version'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO history_meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise HistoryError(
                    f"{self.path}: history schema version {row[0]} is newer than this edgespec ({SCHEMA_VERSION})"
                )

    def _tx(self):
        return _Transaction(self)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> "HistoryIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise HistoryError("the history index is closed")
        return self._db

    def version(self) -> tuple[int, int]:
        """Changes whenever the stored history may have changed (this or another connection)."""
        with self._lock:
            (dv,) = self._conn().execute("PRAGMA data_version").fetchone()
            return self._changes, int(dv)

    # -- documents ------------------------------------------------------------------------------------------------

    def count(self) -> int:
        with self._lock:
            return int(self._conn().execute("SELECT COUNT(*) FROM history_docs").fetchone()[0])

    def doc_ids(self) -> list[int]:
        """Stored report ids, oldest first."""
        with self._lock:
            return [r[0] for r in self._conn().execute("SELECT id FROM history_docs ORDER BY seq, id")]

    def documents(self) -> list[tuple[int, str, str]]:
        """(id, source, text) of every stored report, oldest first."""
        with self._lock:
            return list(self._conn().execute("SELECT id, source, text FROM history_docs ORDER BY seq, id"))

    def total_tokens(self, model_id: str) -> int:
        with self._lock:
            row = self._conn().execute(
                "SELECT COALESCE(SUM(n_tokens), 0) FROM history_tokens WHERE model_id=?", (model_id,)
            ).fetchone()
            return int(row[0])

    def add_report(
        self,
        text: str,
        *,
        source: str = "report",
        tokenize: TokenizeFn | None = None,
        model_id: str | None = None,
    ) -> int:
        """Store a report text (or refresh it to newest if already stored); returns its id.

        With ``tokenize`` and ``model_id`` it is also tokenized for that tokenizer
        now; otherwise that happens lazily in ``sync_model``. Bounds are enforced
        before returning, so the id may already be evicted when the bound is tiny.
        """
        if not isinstance(text, str):
            raise HistoryError(f"a report is text, got {type(text).__name__}")
        text = text.strip()
        if not text:
            raise HistoryError("refusing to index an empty report")
        if len(text) > MAX_REPORT_CHARS:
            raise HistoryError(f"report is {len(text)} characters; the limit is {MAX_REPORT_CHARS}")
        if (tokenize is None) != (model_id is None):
            raise HistoryError("give both tokenize and model_id, or neither")
        toks = None
        if tokenize is not None:
            self._check_model(model_id, tokenize)
            toks = _check_tokens(tokenize(text), "report")
        sha = _sha(text)
        with self._tx() as db:
            seq = int(db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM history_docs").fetchone()[0])
            row = db.execute("SELECT id FROM history_docs WHERE sha256=?", (sha,)).fetchone()
            if row is not None:
                doc_id = int(row[0])
                db.execute("UPDATE history_docs SET seq=? WHERE id=?", (seq, doc_id))
            else:
                cur = db.execute(
                    "INSERT INTO history_docs (sha256, text, source, seq) VALUES (?, ?, ?, ?)", (sha, text, source, seq)
                )
                doc_id = int(cur.lastrowid)
            if toks is not None:
                db.execute(
                    "INSERT OR REPLACE INTO history_tokens (model_id, doc_id, n_tokens, tokens) VALUES (?, ?, ?, ?)",
                    (model_id, doc_id, int(toks.size), toks.tobytes()),
                )
            self._evict(db, model_id)
        return doc_id

    def seed_templates(self) -> int:
        """Add the template reports (the cold start); returns how many were added."""
        n = 0
        for _name, text in self.templates():
            self.add_report(text, source="template")
            n += 1
        return n

    def remove(self, doc_id: int) -> bool:
        with self._tx() as db:
            return self._delete(db, [doc_id]) > 0

    def clear(self) -> None:
        """Forget every stored report (the next open seeds the templates again)."""
        with self._tx() as db:
            db.execute("DELETE FROM history_tokens")
            db.execute("DELETE FROM history_docs")

    def _delete(self, db: sqlite3.Connection, ids: Iterable[int]) -> int:
        ids = list(ids)
        n = 0
        for doc_id in ids:
            db.execute("DELETE FROM history_tokens WHERE doc_id=?", (doc_id,))
            n += db.execute("DELETE FROM history_docs WHERE id=?", (doc_id,)).rowcount
        return n

    def _evict(self, db: sqlite3.Connection, model_id: str | None) -> None:
        (n_docs,) = db.execute("SELECT COUNT(*) FROM history_docs").fetchone()
        if n_docs > self.max_docs:
            old = [r[0] for r in db.execute("SELECT id FROM history_docs ORDER BY seq, id LIMIT ?", (n_docs - self.max_docs,))]
            self._delete(db, old)
        models = [model_id] if model_id is not None else [r[0] for r in db.execute("SELECT model_id FROM history_models")]
        for mid in models:
            (total,) = db.execute(
                "SELECT COALESCE(SUM(n_tokens), 0) FROM history_tokens WHERE model_id=?", (mid,)
            ).fetchone()
            if total <= self.max_tokens:
                continue
            victims = []
            for doc_id, n_tok in db.execute(
                "SELECT d.id, t.n_tokens FROM history_docs d JOIN history_tokens t ON t.doc_id=d.id AND t.model_id=? "
                "ORDER BY d.seq, d.id",
                (mid,),
            ):
                if total <= self.max_tokens:
                    break
                victims.append(doc_id)
                total -= n_tok
            self._delete(db, victims)

    # -- per-tokenizer token ids ---------------------------------------------------------------------------------

    def _check_model(self, model_id: str, tokenize: TokenizeFn) -> None:
        """Register ``model_id``; drop its stored token ids if its tokenizer no longer gives the same ids."""
        require_model_id(model_id)
        probe = _sha(",".join(map(str, _check_tokens(tokenize(_PROBE_TEXT), "probe").tolist())))
        with self._tx() as db:
            row = db.execute("SELECT probe FROM history_models WHERE model_id=?", (model_id,)).fetchone()
            if row is None:
                db.execute("INSERT INTO history_models VALUES (?, ?)", (model_id, probe))
            elif row[0] != probe:
                db.execute("DELETE FROM history_tokens WHERE model_id=?", (model_id,))
                db.execute("UPDATE history_models SET probe=? WHERE model_id=?", (probe, model_id))

    def sync_model(self, model_id: str, tokenize: TokenizeFn) -> list[int]:
        """Tokenize every stored report that lacks token ids for ``model_id``; return the ids held for it, oldest first.

        The token bound may evict old reports here (a new tokenizer can count more
        tokens than the one the reports were bounded with).
        """
        self._check_model(model_id, tokenize)
        with self._lock:
            missing = list(
                self._conn().execute(
                    "SELECT d.id, d.text FROM history_docs d LEFT JOIN history_tokens t "
                    "ON t.doc_id=d.id AND t.model_id=? WHERE t.doc_id IS NULL ORDER BY d.seq, d.id",
                    (model_id,),
                )
            )
        rows = [(doc_id, _check_tokens(tokenize(text), f"report {doc_id}")) for doc_id, text in missing]
        with self._tx() as db:
            for doc_id, toks in rows:
                # The report may have been removed meanwhile by another thread: only store for live docs.
                db.execute(
                    "INSERT OR REPLACE INTO history_tokens (model_id, doc_id, n_tokens, tokens) "
                    "SELECT ?, id, ?, ? FROM history_docs WHERE id=?",
                    (model_id, int(toks.size), toks.tobytes(), doc_id),
                )
            self._evict(db, model_id)
            return [
                r[0]
                for r in db.execute(
                    "SELECT d.id FROM history_docs d JOIN history_tokens t ON t.doc_id=d.id AND t.model_id=? "
                    "ORDER BY d.seq, d.id",
                    (model_id,),
                )
            ]

    def tokens(self, model_id: str, doc_ids: Iterable[int]) -> dict[int, list[int]]:
        """Token ids of the given reports for ``model_id`` (reports without them are left out)."""
        out: dict[int, list[int]] = {}
        with self._lock:
            db = self._conn()
            for doc_id in doc_ids:
                row = db.execute(
                    "SELECT tokens FROM history_tokens WHERE model_id=? AND doc_id=?", (model_id, doc_id)
                ).fetchone()
                if row is not None:
                    out[int(doc_id)] = np.frombuffer(row[0], dtype="<i4").tolist()
        return out


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT under the index lock; rollback on error (no half-written history)."""

    def __init__(self, index: HistoryIndex):
        self.index = index

    def __enter__(self) -> sqlite3.Connection:
        self.index._lock.acquire()
        try:
            db = self.index._conn()
            db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.index._lock.release()
            raise
        return db

    def __exit__(self, exc_type, exc, tb) -> None:
        db = self.index._db
        try:
            if exc_type is None:
                db.execute("COMMIT")
                self.index._changes += 1
            else:
                db.execute("ROLLBACK")
        finally:
            self.index._lock.release()
