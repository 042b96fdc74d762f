"""History drafter: draft from the user's own earlier reports (retrieval-based drafting, as in REST, He et al. 2023).

Scouting reports are mostly boilerplate the user's earlier reports already
contain, so the continuation of the longest suffix of the context that occurs in
those reports is a cheap, often long, deterministic draft.

Two parts:

* ``HistoryIndex``: the durable store. Report texts in SQLite (tables
  ``history_*``, inside the fieldlog database when one is given, else a per-user
  file), their tokenization per oracle tokenizer (``model_id``), bounded in
  size with oldest-first eviction. Texts are model-independent, so a report
  saved while no model is loaded, or a switch to another oracle, is tokenized
  lazily the next time a drafter for that tokenizer opens the index. A new index
  is seeded with the template reports in ``edgespec/samples/templates/`` so the
  first report on a device already drafts well.
* ``SuffixAutomaton`` + ``HistoryDrafter``: at startup the token sequences of the
  relevant tokenizer go into an in-memory suffix automaton. Matching the
  growing context against it costs amortised O(1) per committed token, and the
  automaton's transitions *are* the trie of continuations, weighted by how many
  times each occurs, so ``propose`` (greedy: most frequent continuation) and
  ``propose_candidates`` (several branches) take microseconds.

Memory: the automaton costs roughly 400 bytes per indexed token (measured on
120k tokens of synthetic reports: 48 MB, built in 0.14 s; adding one report
then takes ~25 ms). The default bound, 120,000 tokens per tokenizer (~360
reports of 330 tokens), keeps it under ~50 MB.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .. import EdgespecError
from .base import SamplingSpec
from .lookup import ContextIndex, MatchDraft, copy_continuation

DEFAULT_MAX_DOCS = 500
DEFAULT_MAX_TOKENS = 120_000  # per model_id (tokenizer); bounds the in-memory automaton (< ~50 MB)
MAX_REPORT_CHARS = 100_000  # one report; anything longer is not a scouting report
START_MATCH_LEN = 8  # how deep the start of a report counts as matched (the policy's bucket for its drafts)
SCHEMA_VERSION = 1
# Tokenized once per model_id; a changed result means the tokenizer behind that id changed.
_PROBE_TEXT = "Summary: 4 of 50 clusters (8%) infested with grape berry moth larvae in block B4, rows 12-18."

TokenizeFn = Callable[[str], list[int]]


class HistoryError(EdgespecError, ValueError):
    """The history index cannot be opened or was given bad input."""


def default_db_path() -> Path:
    """The per-user history file used when no fieldlog database is given."""
    import platformdirs

    return Path(platformdirs.user_data_dir("edgespec")) / "history.db"


def template_reports() -> list[tuple[str, str]]:
    """(name, text) of the shipped cold-start template reports, in name order."""
    root = resources.files("edgespec") / "samples" / "templates"
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
    """

    def __init__(
        self,
        db_path: str | Path | None = None,
        *,
        max_docs: int = DEFAULT_MAX_DOCS,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        seed_templates: bool = True,
    ):
        for name, val in (("max_docs", max_docs), ("max_tokens", max_tokens)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise HistoryError(f"{name} must be a positive integer, got {val!r}")
        self.max_docs = max_docs
        self.max_tokens = max_tokens
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
        """Add the shipped template reports (the cold start); returns how many were added."""
        n = 0
        for _name, text in template_reports():
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
        if not isinstance(model_id, str) or not model_id:
            raise HistoryError(f"model_id must be a non-empty string, got {model_id!r}")
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


# Every document starts with this symbol: the state after it is "a report begins here", so the
# first tokens of a new report can be drafted from how earlier reports began (see HistoryDrafter.begin).
REPORT_START = -(1 << 40)


class SuffixAutomaton:
    """Suffix automaton over many token documents, with occurrence counts.

    Each document starts with ``REPORT_START`` and is followed by its own
    negative separator symbol, so no match crosses a document boundary, a
    continuation stops where a report ended, and ``start_state`` is where
    every report began.
    ``cnt[v]`` is how many times the strings of state ``v`` occur and
    ``last[v]`` the end position of their most recent occurrence (ties between
    equally frequent continuations go to the newest report). Construction is
    amortised O(length) per document; counts are recomputed in one O(states)
    pass after each batch of documents (walking suffix links per position
    instead would be quadratic on the looping text small models sometimes write).
    """

    def __init__(self) -> None:
        self.next: list[dict[int, int]] = [{}]
        self.link: list[int] = [-1]
        self.len: list[int] = [0]
        self.cnt: list[int] = [0]
        self.last: list[int] = [0]
        self._own: list[int] = [0]  # end position a state was created for; 0 for clones and the root
        self._tail = 0
        self._n_syms = 0  # symbols appended (tokens, start marks, separators): the end positions
        self.n_docs = 0
        self.n_tokens = 0
        self._best: dict[int, int] = {}  # state -> best child state (cache, reset on every change)

    def __len__(self) -> int:
        return len(self.len)

    def add_doc(self, tokens: Iterable[int]) -> None:
        self.add_docs([tokens])

    def add_docs(self, docs: Iterable[Iterable[int]]) -> None:
        """Append documents (each a sequence of non-negative token ids), then recount occurrences."""
        nxt, link, ln, own = self.next, self.link, self.len, self._own
        # One automaton of the concatenation doc1 sep1 doc2 sep2 ...: the separators are unique, so no
        # match spans two reports, and the plain (single-string) construction stays correct.
        tail = self._tail
        pos = self._n_syms
        for tokens in docs:
            syms = list(tokens)
            self.n_tokens += len(syms)
            self.n_docs += 1
            syms = [REPORT_START, *syms, -self.n_docs]
            for c in syms:
                pos += 1
                cur = len(ln)
                nxt.append({})
                ln.append(ln[tail] + 1)
                link.append(0)
                own.append(pos)
                p = tail
                while p != -1 and c not in nxt[p]:
                    nxt[p][c] = cur
                    p = link[p]
                if p != -1:
                    q = nxt[p][c]
                    if ln[p] + 1 == ln[q]:
                        link[cur] = q
                    else:
                        clone = len(ln)
                        nxt.append(dict(nxt[q]))
                        ln.append(ln[p] + 1)
                        link.append(link[q])
                        own.append(0)
                        while p != -1 and nxt[p].get(c) == q:
                            nxt[p][c] = clone
                            p = link[p]
                        link[q] = clone
                        link[cur] = clone
                tail = cur
        self._tail = tail
        self._n_syms = pos
        self._recount()

    def _recount(self) -> None:
        """endpos sizes and most recent end: sum/max over the suffix-link tree, longest states first."""
        link, own = self.link, self._own
        cnt = [1 if o else 0 for o in own]
        last = list(own)
        for v in sorted(range(1, len(own)), key=self.len.__getitem__, reverse=True):
            p = link[v]
            cnt[p] += cnt[v]
            if last[v] > last[p]:
                last[p] = last[v]
        self.cnt, self.last = cnt, last
        self._best = {}

    @property
    def start_state(self) -> int:
        """The state right after ``REPORT_START`` (0 while the automaton is empty)."""
        return self.next[0].get(REPORT_START, 0)

    def step(self, state: int, length: int, token: int) -> tuple[int, int]:
        """Matching statistics: extend the match (state, length) by ``token``; shorten it as needed."""
        nxt, link, ln = self.next, self.link, self.len
        while state and token not in nxt[state]:
            state = link[state]
            length = ln[state]
        child = nxt[state].get(token)
        if child is None:
            return 0, 0
        return child, length + 1

    def best_child(self, state: int) -> int:
        """The most frequent continuation state of ``state`` (newest on ties); -1 if none.

        A separator (end of report) competes too: when the most frequent thing after
        the match is the end of a report, there is nothing worth drafting.
        """
        b = self._best.get(state)
        if b is None:
            children = self.next[state]
            if not children:
                b = -1
            else:
                cnt, last = self.cnt, self.last
                b = max(children.values(), key=lambda u: (cnt[u], last[u]))
            self._best[state] = b
        return b

    def token_of(self, parent: int, child: int) -> int:
        for tok, u in self.next[parent].items():
            if u == child:
                return tok
        raise KeyError(child)

    def greedy(self, state: int, max_tokens: int, min_confidence: float = 0.0) -> tuple[list[int], list[float]]:
        """The most frequent continuation of the match ending in ``state``, token by token."""
        toks: list[int] = []
        confs: list[float] = []
        cnt = self.cnt
        while len(toks) < max_tokens:
            total = cnt[state]
            child = self.best_child(state)
            if child < 0 or total <= 0:
                break
            tok = self.token_of(state, child)
            if tok < 0:
                break
            conf = cnt[child] / total
            if conf < min_confidence:
                break
            toks.append(tok)
            confs.append(conf)
            state = child
        return toks, confs

    def branches(self, state: int, max_tokens: int, n: int) -> list[tuple[list[int], list[float]]]:
        """Up to ``n`` distinct continuations: a beam over the continuation trie, scored by occurrence count.

        Returned best first by expected accepted length (the sum of the empirical
        probabilities of each prefix), which is what verifying the candidate buys.
        """
        cnt, nxt = self.cnt, self.next
        root_total = cnt[state]
        if root_total <= 0 or n <= 0 or max_tokens <= 0:
            return []
        # beam entries: (tokens, confidences, state, prefix counts)
        beams: list[tuple[list[int], list[float], int, list[int]]] = [([], [], state, [])]
        done: list[tuple[list[int], list[float], int, list[int]]] = []
        for _depth in range(max_tokens):
            expanded = []
            for toks, confs, v, counts in beams:
                kids = [(tok, u) for tok, u in nxt[v].items() if tok >= 0]
                if not kids:
                    done.append((toks, confs, v, counts))
                    continue
                total = cnt[v]
                for tok, u in kids:
                    expanded.append((toks + [tok], confs + [cnt[u] / total], u, counts + [cnt[u]]))
            if not expanded:
                beams = []
                break
            expanded.sort(key=lambda b: (b[3][-1], self.last[b[2]]), reverse=True)
            beams = expanded[:n]
        pool = [b for b in done if b[0]] + beams

        def score(b):
            return sum(b[3]) / root_total

        pool.sort(key=lambda b: (score(b), len(b[0])), reverse=True)
        return [(b[0], b[1]) for b in pool[:n]]


@dataclass
class _Stats:
    proposals: int = 0
    drafted: int = 0
    accepted: int = 0


class HistoryDrafter:
    """Draft the continuation that most often followed the context's longest suffix in past reports.

    Also matches within the current context (like prompt lookup), because block
    names and numbers repeat from the field note. Which of the two drafts to use
    (``_prefer_context``): numbers from the note, wording from the history. When
    both drafts start with a number, the context's wins (a season's reports
    share their sentences but not their counts and dates); when they differ only
    in letter case, the history's wins (the note writes "grape berry moth", the
    reports "Grape berry moth"); otherwise the longer match, the context on ties.
    Measured in the replay (tools/simulate_drafting.py) on the former 8-week
    season, the two rules alone lift history drafting from 1.16x to 1.19x.

    A report whose prompt ends in no match (a chat prompt ends in the assistant
    header) starts in the automaton's ``start_state``, as if matched
    ``START_MATCH_LEN`` tokens deep: its first tokens are drafted from how
    earlier reports began. Those drafts (until the match falls back) are labelled
    source "history-start", so the policy learns their odds apart from other
    history drafts: they pay over a season and rarely on unrelated reports.

    ``k_max``: longest draft; ``min_match``: shortest suffix worth drafting from;
    ``min_confidence``: stop a history draft at the first token whose empirical
    probability given the match is below this. Each draft carries ``match_len``,
    ``source`` ("history", or "lookup" for a match inside the context), ``support`` and per-token
    ``confidence`` for the policy; ``last_match_len`` holds the latest.

    ``tokenize`` must turn report text into oracle ids exactly as generation
    would produce them: e.g. ``lambda s: oracle.tokenize(s, add_bos=False,
    special=False)``; ``model_id`` names that tokenizer (the oracle's
    ``vocab_fingerprint()``); ``token_text`` (token id -> its text) enables the
    number and letter-case rules. ``HistoryDrafter.for_oracle`` wires all three.
    One drafter serves one generation at a time; other threads save reports
    through the (thread-safe) ``HistoryIndex`` and the drafter picks them up at
    the next ``begin``.
    """

    name = "history"
    cheap = True  # proposing costs microseconds: the engine asks for full-length drafts and trims by bucket
    multi_candidate = True  # propose_candidates: the branches where past reports went on differently

    def __init__(
        self,
        index: HistoryIndex,
        tokenize: TokenizeFn,
        model_id: str,
        k_max: int = 16,
        *,
        min_match: int = 2,
        min_confidence: float = 0.0,
        use_context: bool = True,
        context_max_match: int = 16,
        token_text: Callable[[int], str] | None = None,
    ):
        if isinstance(k_max, bool) or not isinstance(k_max, int) or k_max < 1:
            raise HistoryError(f"k_max must be a positive integer, got {k_max!r}")
        if isinstance(min_match, bool) or not isinstance(min_match, int) or min_match < 1:
            raise HistoryError(f"min_match must be a positive integer, got {min_match!r}")
        if not 0.0 <= float(min_confidence) <= 1.0:
            raise HistoryError(f"min_confidence must be in [0, 1], got {min_confidence!r}")
        if not callable(tokenize):
            raise HistoryError("tokenize must be callable (text -> oracle token ids)")
        if not isinstance(model_id, str) or not model_id:
            raise HistoryError(f"model_id must be a non-empty string, got {model_id!r}")
        if token_text is not None and not callable(token_text):
            raise HistoryError("token_text must be callable (token id -> text)")
        self.index = index
        self.token_text = token_text
        self._texts: dict[int, str] = {}
        self.tokenize = tokenize
        self.model_id = model_id
        self.k_max = k_max
        self.min_match = min_match
        self.min_confidence = float(min_confidence)
        self.use_context = use_context
        self._ctx = ContextIndex(min_match, max(min_match, context_max_match))
        self._sam = SuffixAutomaton()
        self._doc_ids: list[int] = []
        self._version: tuple[int, int] | None = None
        self._state = (0, 0)  # (automaton state, match length) after the synced context
        self._from_start = False  # the match still reaches back to the start of the report
        self.last_match_len = 0
        self.stats = _Stats()
        self.refresh()

    @classmethod
    def for_oracle(cls, index: HistoryIndex, oracle, **kwargs) -> "HistoryDrafter":
        """A drafter in ``oracle``'s token space (a ``LlamaModel``): tokenizer, id and token texts from it."""
        return cls(
            index,
            lambda s: oracle.tokenize(s, add_bos=False, special=False),
            oracle.vocab_fingerprint(),
            token_text=lambda t: oracle.token_bytes(t, special=False).decode("utf-8", "replace"),
            **kwargs,
        )

    # -- index ----------------------------------------------------------------------------------------------------

    @property
    def n_docs(self) -> int:
        return self._sam.n_docs

    @property
    def n_tokens(self) -> int:
        return self._sam.n_tokens

    def refresh(self) -> None:
        """Bring the in-memory automaton up to date with the stored history (cheap when nothing changed)."""
        version = self.index.version()
        if version == self._version:
            return
        ids = self.index.sync_model(self.model_id, self.tokenize)
        have = set(self._doc_ids)
        if have.issubset(ids):  # only additions (or a refresh to newest): extend in place
            new = [i for i in ids if i not in have]
            sam, kept = self._sam, list(self._doc_ids)
        else:  # something was evicted or removed: an automaton cannot forget, rebuild it
            new, sam, kept = ids, SuffixAutomaton(), []
        toks = self.index.tokens(self.model_id, new)
        added = [doc_id for doc_id in new if doc_id in toks]
        if added:
            sam.add_docs(toks[doc_id] for doc_id in added)
            kept.extend(added)
        self._sam = sam
        self._doc_ids = kept
        self._version = self.index.version()
        self._state = (0, 0)
        self._from_start = False
        self._ctx.reset()  # the automaton changed: re-walk the context on the next propose

    def add_report(self, text: str, *, source: str = "report") -> int:
        """Save a finished report to the history and make it draftable immediately."""
        doc_id = self.index.add_report(text, source=source, tokenize=self.tokenize, model_id=self.model_id)
        self.refresh()
        return doc_id

    # -- Drafter protocol -----------------------------------------------------------------------------------------

    def begin(self, prompt_tokens: list[int]) -> None:
        """A new report: match the prompt; where its end matches nothing, in the history or earlier in the
        prompt (a chat prompt ends in the assistant header), stand at the start of a report instead."""
        self.refresh()
        self._ctx.reset()
        self._state = (0, 0)
        self._from_start = False
        self._sync(list(prompt_tokens))
        start = self._sam.start_state
        if start and self._state[1] < self.min_match and self._ctx.longest_match()[0] < self.min_match:
            self._state = (start, START_MATCH_LEN)
            self._from_start = True
        self.last_match_len = 0

    def _sync(self, context: list[int]) -> None:
        """Catch the context index and the automaton match up with ``context`` (only new tokens cost)."""
        kept = self._ctx.sync(context)
        state, length = self._state if kept else (0, 0)
        from_start = self._from_start and kept > 0
        step = self._sam.step
        for tok in context[kept:]:
            state, new_length = step(state, length, tok)
            from_start = from_start and new_length == length + 1  # any fallback leaves the report start
            length = new_length
        self._state = (state, length)
        self._from_start = from_start

    def _history_draft(self, max_tokens: int) -> MatchDraft:
        state, length = self._state
        source = "history-start" if self._from_start else "history"
        if length < self.min_match:
            return MatchDraft(match_len=length, source=source)
        toks, confs = self._sam.greedy(state, max_tokens, self.min_confidence)
        return MatchDraft(tokens=toks, match_len=length, source=source, support=self._sam.cnt[state], confidence=confs)

    def _context_draft(self, max_tokens: int) -> MatchDraft:
        if not self.use_context:
            return MatchDraft(match_len=0, source="lookup")
        n, end = self._ctx.longest_match()
        if n < self.min_match:
            return MatchDraft(match_len=n, source="lookup")
        toks = copy_continuation(self._ctx.tokens, end, max_tokens)
        return MatchDraft(tokens=toks, match_len=n, source="lookup", support=1, confidence=[1.0] * len(toks))

    def propose(self, context: list[int], max_tokens: int, *, sample: SamplingSpec | None = None) -> MatchDraft:
        self._sync(context)
        limit = min(int(max_tokens), self.k_max)
        if limit <= 0:
            self.last_match_len = 0
            return MatchDraft(match_len=0, source=self.name)
        hist = self._history_draft(limit)
        ctx = self._context_draft(limit)
        best = ctx if self._prefer_context(hist, ctx) else hist
        self.last_match_len = best.match_len
        self.stats.proposals += 1
        return best

    def _text(self, token: int) -> str:
        text = self._texts.get(token)
        if text is None:
            text = self._texts[token] = self.token_text(token) if self.token_text is not None else ""
        return text

    def _prefer_context(self, hist: MatchDraft, ctx: MatchDraft) -> bool:
        """Numbers from the note, wording from the history; else the longer match, the context on ties."""
        if not (hist.tokens and ctx.tokens):
            if hist.tokens or ctx.tokens:
                return bool(ctx.tokens)
            return hist.match_len <= ctx.match_len
        if self.token_text is not None and hist.tokens[0] != ctx.tokens[0]:
            h, c = self._text(hist.tokens[0]).strip(), self._text(ctx.tokens[0]).strip()
            if h.isdigit() and c.isdigit():
                return True
            if h.lower() == c.lower():
                return False
        return hist.match_len <= ctx.match_len

    def propose_candidates(self, context: list[int], max_tokens: int, n: int = 4) -> list[MatchDraft]:
        """Up to ``n`` distinct drafts where continuations branch, best first (the first is ``propose``'s).

        History branches come from the continuation trie weighted by count; the
        context's own continuation is added when it differs. The engine can verify
        them in one oracle pass (one sequence per candidate over a shared prefix).
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise HistoryError(f"n must be a positive integer, got {n!r}")
        self._sync(context)
        limit = min(int(max_tokens), self.k_max)
        if limit <= 0:
            return []
        state, length = self._state
        cands: list[MatchDraft] = []
        if length >= self.min_match:
            greedy = self._history_draft(limit)
            if greedy.tokens:
                cands.append(greedy)
            support = self._sam.cnt[state]
            for toks, confs in self._sam.branches(state, limit, n):
                if self.min_confidence > 0:
                    cut = next((i for i, c in enumerate(confs) if c < self.min_confidence), len(confs))
                    toks, confs = toks[:cut], confs[:cut]
                if toks:
                    cands.append(
                        MatchDraft(tokens=toks, match_len=length, source=greedy.source, support=support, confidence=confs)
                    )
        ctx = self._context_draft(limit)
        if ctx.tokens:
            if not cands or self._prefer_context(cands[0], ctx):
                cands.insert(0, ctx)
            else:
                cands.append(ctx)
        out: list[MatchDraft] = []
        seen: set[tuple[int, ...]] = set()
        for c in cands:
            key = tuple(c.tokens)
            if key not in seen:
                seen.add(key)
                out.append(c)
        out = out[:n]
        self.last_match_len = out[0].match_len if out else length
        return out

    def accepted(self, context: list[int], n_accepted: int, n_drafted: int) -> None:
        self.stats.drafted += max(0, int(n_drafted))
        self.stats.accepted += max(0, int(n_accepted))

    def close(self) -> None:
        """Drop the in-memory automaton (the index belongs to the caller and stays open)."""
        self._sam = SuffixAutomaton()
        self._doc_ids = []
        self._version = None
        self._ctx.reset()
