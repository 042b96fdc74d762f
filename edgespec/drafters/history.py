"""History drafter: draft from the user's own earlier reports (retrieval-based drafting, as in REST, He et al. 2023).

Scouting reports are mostly boilerplate the user's earlier reports already
contain, so the continuation of the longest suffix of the context that occurs in
those reports is a cheap, often long, deterministic draft.

Three modules: ``history_index.HistoryIndex`` stores the report texts and their
token ids in SQLite; at startup the token sequences of the oracle's tokenizer
go into an in-memory ``suffix_automaton.SuffixAutomaton``; ``HistoryDrafter``
(here) matches the growing context against it and against the context itself,
and picks between the two drafts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .base import SamplingSpec
from .history_index import HistoryError, HistoryIndex, TokenizeFn, require_model_id, require_positive_int
from .lookup import ContextIndex, MatchDraft
from .suffix_automaton import SuffixAutomaton

START_MATCH_LEN = 8  # how deep the start of a report counts as matched (the policy's bucket for its drafts)


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
    probability given the match is below this; ``min_path_prob``: stop where the product of those
    probabilities along the draft falls below this (SuffixDecoding's path probability, its default 0.1;
    in the replay on the samples it lifted single-note history drafting from 1.08x to 1.10x median and
    left the season as it was); ``spec_factor``: cap a draft at this many tokens per matched token
    (SuffixDecoding's ``max_spec_factor``; off by default, no gain in the replay). Each draft carries ``match_len``,
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
        min_path_prob: float = 0.1,
        spec_factor: float | None = None,
        use_context: bool = True,
        context_max_match: int = 16,
        token_text: Callable[[int], str] | None = None,
    ):
        require_positive_int("k_max", k_max)
        require_positive_int("min_match", min_match)
        if not 0.0 <= float(min_confidence) <= 1.0:
            raise HistoryError(f"min_confidence must be in [0, 1], got {min_confidence!r}")
        if not callable(tokenize):
            raise HistoryError("tokenize must be callable (text -> oracle token ids)")
        require_model_id(model_id)
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
        if not 0.0 <= float(min_path_prob) <= 1.0:
            raise HistoryError(f"min_path_prob must be in [0, 1], got {min_path_prob!r}")
        if spec_factor is not None and not float(spec_factor) > 0:
            raise HistoryError(f"spec_factor must be > 0, got {spec_factor!r}")
        self.min_path_prob = float(min_path_prob)
        self.spec_factor = None if spec_factor is None else float(spec_factor)
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
        if self.spec_factor is not None:  # SuffixDecoding: a short match earns a short draft
            max_tokens = min(max_tokens, max(1, int(self.spec_factor * length)))
        toks, confs = self._sam.greedy(state, max_tokens, self.min_confidence, self.min_path_prob)
        return MatchDraft(tokens=toks, match_len=length, source=source, support=self._sam.cnt[state], confidence=confs)

    def _context_draft(self, max_tokens: int) -> MatchDraft:
        if not self.use_context:
            return MatchDraft(match_len=0, source="lookup")
        return self._ctx.draft(max_tokens)  # the index's shortest n-gram is min_match: shorter drafts nothing

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
        require_positive_int("n", n)
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
