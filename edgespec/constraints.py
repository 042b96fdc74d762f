"""Grammar constraints on the oracle: a Lark grammar or a JSON schema, matched by llguidance.

A ``Constraint`` is what a caller asks for, checked for syntax when it is made.
``constraint.matcher(oracle)`` checks it against the oracle's vocabulary and
returns a ``GrammarMatcher``: the grammar state of one generation, advanced with
every committed token. It answers what the draft-verify loop needs: the allowed
tokens here (``mask``), the tokens the grammar forces next (``forced``, for
jump-forward), how much of a draft the grammar allows (``allowed_prefix``), the
masks along a draft (``along`` lazily, ``draft_masks`` eagerly), ``rollback`` and
the stopped/accepting state. The numerics that use these masks are ``masks.py``.

llguidance is what llama.cpp itself uses for constraints; its tokenizer calls
back into llama.cpp's tokenizer (for the forced tokens), so it is built once per
vocabulary on a vocabulary-only copy of the model that lives as long as the cache.
"""

from __future__ import annotations

import json
import threading
import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from . import EdgespecError
from .masks import bitmask_to_bool


class ConstraintError(EdgespecError, ValueError):
    """An invalid grammar or schema, or a token the grammar does not allow where one was required."""


def _llg():
    import llguidance

    return llguidance


def _check(grammar: str, what: str, tokenizer=None) -> tuple[str, ...]:
    is_error, messages = _llg().LLMatcher.validate_grammar_with_warnings(grammar, tokenizer)
    if is_error:
        raise ConstraintError(f"invalid {what}: {messages[0].strip()}")
    return tuple(m.strip() for m in messages)


@dataclass(frozen=True)
class Constraint:
    """A grammar the oracle's output must follow: llguidance's grammar text, what it was made from, warnings."""

    grammar: str
    kind: str
    warnings: tuple[str, ...] = ()

    @classmethod
    def lark(cls, text: str) -> Constraint:
        """A grammar in llguidance's Lark dialect (``start:`` rule, "literals", /regexes/, %json{…} islands)."""
        if not isinstance(text, str) or not text.strip():
            raise ConstraintError("a Lark grammar must be a non-empty string")
        g = _llg().LLMatcher.grammar_from_lark(text)
        return cls(g, "lark", _check(g, "Lark grammar"))

    @classmethod
    def json_schema(cls, schema: dict | str, *, whitespace_flexible: bool = False) -> Constraint:
        """A JSON schema; compact JSON by default: a model can loop on free whitespace forever, and fixed
        separators are forced tokens the engine takes without sampling."""
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as e:
                raise ConstraintError(f"the JSON schema is not valid JSON ({e})") from None
        if not isinstance(schema, dict):
            raise ConstraintError(f"a JSON schema must be an object, got {type(schema).__name__}")
        g = _llg().LLMatcher.grammar_from_json_schema(schema, {"whitespace_flexible": bool(whitespace_flexible)})
        return cls(g, "json_schema", _check(g, "JSON schema"))

    @classmethod
    def regex(cls, pattern: str) -> Constraint:
        """The whole output matches a regular expression (Rust regex syntax)."""
        if not isinstance(pattern, str) or not pattern:
            raise ConstraintError("a regex must be a non-empty string")
        g = _llg().LLMatcher.grammar_from_regex(pattern)
        return cls(g, "regex", _check(g, "regex"))

    def matcher(self, oracle: Any = None, *, tokenizer: Any = None, n_vocab: int | None = None) -> GrammarMatcher:
        """A fresh grammar state for one generation on ``oracle`` (an ``edgespec.llama.LlamaModel``).

        A caller without a llama.cpp model (a replay) passes an llguidance ``tokenizer`` and the
        logits width ``n_vocab`` instead. Raises ``ConstraintError`` when the grammar cannot be used
        with this vocabulary.
        """
        if tokenizer is None:
            if oracle is None:
                raise ValueError("pass the oracle, or a tokenizer and n_vocab")
            tokenizer = tokenizer_for(oracle)
        if n_vocab is None:
            n_vocab = oracle.n_vocab if oracle is not None else tokenizer.vocab_size
        return GrammarMatcher(self, tokenizer, int(n_vocab))


def lark_literal(text: str) -> str:
    """``text`` as a string literal of llguidance's Lark dialect (JSON escapes; no raw control characters)."""
    if not isinstance(text, str):
        raise ConstraintError(f"a literal must be a string, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ConstraintError("a literal must be valid Unicode (it holds a lone surrogate)") from None
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


# --------------------------------------------------------------------------- tokenizer cache


@dataclass
class _Vocabulary:
    model: Any  # the vocabulary-only LlamaModel the tokenizer calls into; must outlive it
    tokenizer: Any


_cache: dict[tuple, _Vocabulary] = {}
_cache_lock = threading.Lock()
_keys: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _vocab_key(model) -> tuple:
    key = _keys.get(model)
    if key is None:
        key = (model.vocab_fingerprint(), model.n_vocab, tuple(model.eog_tokens()))
        _keys[model] = key
    return key


def tokenizer_for(model) -> Any:
    """The llguidance tokenizer of ``model``'s vocabulary, built once per vocabulary and process."""
    key = _vocab_key(model)
    with _cache_lock:
        entry = _cache.get(key)
        if entry is None:
            from llguidance.llamacpp import lltokenizer_from_vocab

            from .llama import LlamaModel

            own = LlamaModel(model.path, vocab_only=True)
            with warnings.catch_warnings():
                # llguidance's builder uses a llama-cpp-python call deprecated in favour of another: once per token
                warnings.simplefilter("ignore", DeprecationWarning)
                tok = lltokenizer_from_vocab(own.vocab_handle(), eos_token=own.eog_tokens())
            entry = _cache[key] = _Vocabulary(own, tok)
        return entry.tokenizer


# --------------------------------------------------------------------------- the grammar state


class GrammarMatcher:
    """The grammar state of one generation: advance it with every committed token, in order.

    Not thread-safe: one matcher per generation (``copy()`` for another).
    """

    def __init__(self, constraint: Constraint, tokenizer: Any, n_vocab: int) -> None:
        llg = _llg()
        self.constraint = constraint
        self.n_vocab = n_vocab
        self._tok = tokenizer
        self._n_ll = int(tokenizer.vocab_size)
        self._eog = frozenset(int(t) for t in tokenizer.eos_tokens)
        self._m = llg.LLMatcher(tokenizer, constraint.grammar, log_level=0)
        if self._m.is_error():
            raise ConstraintError(f"invalid {constraint.kind} grammar for this vocabulary: {self._m.get_error().strip()}")
        self._words = np.zeros((1, (self._n_ll + 31) // 32), dtype=np.int32)
        self.n_consumed = 0  # tokens llguidance holds, what rollback can undo

    # ------------------------------------------------------------ state
    def is_accepting(self) -> bool:
        """The output may end here (an end-of-generation token is allowed)."""
        return bool(self._m.is_accepting())

    def is_stopped(self) -> bool:
        """The grammar allows nothing more but an end-of-generation token: the generation is complete."""
        return bool(self._m.is_stopped())

    @property
    def stop_reason(self) -> str:
        return str(self._m.stop_reason())

    def _raise_if_error(self) -> None:
        if self._m.is_error():
            raise ConstraintError(f"grammar matcher failed: {self._m.get_error().strip()}")

    def _known(self, token: int) -> bool:
        return 0 <= int(token) < self._n_ll  # llguidance enters a permanent error state on ids past its vocabulary

    # ------------------------------------------------------------ questions (state unchanged)
    def mask(self) -> np.ndarray:
        """Bool over the oracle's vocabulary: the tokens allowed next (only end-of-generation tokens once stopped)."""
        from llguidance.numpy import fill_next_token_bitmask

        fill_next_token_bitmask(self._m, self._words)
        self._raise_if_error()
        return bitmask_to_bool(self._words[0], self.n_vocab)

    def allows(self, token: int) -> bool:
        """Whether ``token`` may come next: one token's check, far cheaper than a full mask."""
        token = int(token)
        if not self._known(token):
            return False
        if self.is_stopped():
            return token in self._eog
        return self._m.validate_tokens([token]) == 1

    def allowed_prefix(self, tokens: Sequence[int]) -> int:
        """How many of ``tokens`` the grammar allows in a row from here (a draft is cut there before verifying)."""
        toks = [int(t) for t in tokens]
        n_known = next((i for i, t in enumerate(toks) if not self._known(t)), len(toks))
        if n_known == 0:
            return 0
        if self.is_stopped():  # llguidance's validation refuses even the end token once the grammar is complete
            return int(toks[0] in self._eog)
        return int(self._m.validate_tokens(toks[:n_known]))

    def forced(self) -> list[int]:
        """The tokens the grammar forces from here (one path only), in the oracle's canonical tokenization.

        llguidance keeps back the last bytes when a longer token could still cover them and what
        follows, so a forced run can stop a few bytes short of the fixed text.
        """
        toks = [int(t) for t in self._m.compute_ff_tokens()]
        self._raise_if_error()
        return toks

    def plan(self, draft: Sequence[int], budget: int) -> DraftPlan:
        """The tokens of the next verify batch after the pending ones: the grammar's forced runs wherever
        it forces one (jump-forward), the drafter's tokens elsewhere, up to ``budget`` tokens.

        The drafter's tokens are cut at the first one the grammar refuses. Across a forced run they
        carry on only if the drafter wrote exactly the forced bytes up to a token boundary (its later
        tokens predicted from its own text); otherwise the plan stops after the run. The state is
        unchanged afterwards.
        """
        toks = [int(t) for t in draft]
        out: list[int] = []
        flags: list[bool] = []
        src: list[int | None] = []
        steps = 0
        j = 0
        try:
            while len(out) < budget and not self.is_stopped():
                run = self.forced()[: budget - len(out)]
                if run:
                    steps += self.consume(run)
                    out += run
                    flags += [True] * len(run)
                    src += [None] * len(run)
                    j = self._realign(toks, j, run)
                    continue
                if j >= len(toks) or not self.allows(toks[j]):
                    break
                steps += self.consume([toks[j]])
                out.append(toks[j])
                flags.append(False)
                src.append(j)
                j += 1
            # the position after the plan: forced too when the grammar forces there or is complete
            flags.append(self.is_stopped() or bool(self.forced()))
        finally:
            self.rollback(steps)
        return DraftPlan(out, flags, src)

    def _realign(self, toks: list[int], j: int, run: list[int]) -> int:
        want = self._tok.decode_bytes(run)
        got = b""
        k = j
        while k < len(toks) and len(got) < len(want) and self._known(toks[k]):
            got += self._tok.decode_bytes([toks[k]])
            k += 1
        return k if got == want else len(toks)

    def along(self, draft: Sequence[int]) -> DraftMasks:
        """Masks along ``draft``, computed on demand (use as a context manager: the state is restored on exit)."""
        return DraftMasks(self, draft)

    def draft_masks(self, draft: Sequence[int]) -> tuple[int, np.ndarray]:
        """(allowed prefix, masks): row i is the mask after draft[:i], len(draft) + 1 rows, in one call.

        Rows after the first refused draft token are all False (there is no grammar state there);
        a row after an end-of-generation token allows only end-of-generation tokens.
        """
        toks = [int(t) for t in draft]
        n_ok = self.allowed_prefix(toks)
        out = np.zeros((len(toks) + 1, self.n_vocab), dtype=bool)
        if n_ok == 0:
            out[0] = self.mask()
            return 0, out
        from llguidance.numpy import fill_next_token_bitmask_par_with_draft_tokens

        words = np.zeros((n_ok + 1, self._words.shape[1]), dtype=np.int32)
        fill_next_token_bitmask_par_with_draft_tokens(_executor(), [(self._m, 0, toks[:n_ok])], words)
        self._raise_if_error()
        out[: n_ok + 1] = bitmask_to_bool(words, self.n_vocab)
        # llguidance stops filling rows once the grammar is complete; past that only the end is allowed
        for i in range(1, n_ok + 1):
            if not out[i].any():
                out[i] = self._eog_row()
        return n_ok, out

    def _eog_row(self) -> np.ndarray:
        row = np.zeros(self.n_vocab, dtype=bool)
        row[[t for t in self._eog if t < self.n_vocab]] = True
        return row

    # ------------------------------------------------------------ changes
    def consume(self, tokens: Sequence[int]) -> int:
        """Commit ``tokens``; a token the grammar refuses raises ``ConstraintError`` and commits nothing.

        Returns how many tokens the grammar state advanced by (what ``rollback`` can undo): an
        end-of-generation token after a complete output is allowed but changes nothing.
        """
        toks = [int(t) for t in tokens]
        done = 0
        for i, t in enumerate(toks):
            if self.is_stopped() and t in self._eog:
                if i + 1 < len(toks):
                    self.rollback(done)
                    raise ConstraintError(f"{len(toks) - i - 1} tokens follow the end of a complete output")
                break
            if not self._known(t) or self._m.try_consume_tokens([t]) != 1:
                self.rollback(done)
                self._raise_if_error()
                shown = self._tok.dbg_tokens([t]) if self._known(t) else str(t)
                raise ConstraintError(f"the grammar does not allow token {t} ({shown}) after {self.n_consumed} tokens")
            self.n_consumed += 1
            done += 1
        return done

    def rollback(self, n: int) -> None:
        """Undo the last ``n`` committed tokens (a rejected draft's tail)."""
        n = int(n)
        if not 0 <= n <= self.n_consumed:
            raise ConstraintError(f"cannot roll back {n} tokens: {self.n_consumed} committed")
        if n:
            self._m.rollback(n)
            self._raise_if_error()
            self.n_consumed -= n

    def reset(self) -> None:
        self.rollback(self.n_consumed)

    def copy(self) -> GrammarMatcher:
        other = object.__new__(GrammarMatcher)
        other.__dict__.update(self.__dict__)
        other._m = self._m.deep_copy()
        other._words = np.zeros_like(self._words)
        return other


@dataclass
class DraftPlan:
    """What follows the pending tokens in one verify batch (see ``GrammarMatcher.plan``).

    ``forced`` has len(tokens) + 1 flags (the last: the position after the plan), the
    ``forced`` argument of ``masks.verify_batch`` and the acceptance functions;
    ``from_draft[i]`` is the index of token i in the drafter's draft (its q row), None
    for a forced token.
    """

    tokens: list[int]
    forced: list[bool]
    from_draft: list[int | None]

    @property
    def n_forced(self) -> int:
        return sum(self.forced[:-1])

    @property
    def n_drafted(self) -> int:
        return len(self.tokens) - self.n_forced


class DraftMasks:
    """Row i is the mask after draft[:i], computed when first asked; ``allows(i, t)`` answers one token.

    The matcher walks along the draft as rows are asked for (never past the first
    token the grammar refuses) and returns to where it started on ``close()``.
    """

    def __init__(self, matcher: GrammarMatcher, draft: Sequence[int]) -> None:
        self._gm = matcher
        self.draft = [int(t) for t in draft]
        self.n_allowed = matcher.allowed_prefix(self.draft)
        self._at = 0
        self._steps: list[int] = []  # grammar steps each walked draft token took (0 for a final end token)
        self._rows: dict[int, np.ndarray] = {}
        self.rows_computed = 0

    def __len__(self) -> int:
        return len(self.draft) + 1

    def _goto(self, i: int) -> None:
        if not 0 <= i <= self.n_allowed:
            raise ConstraintError(
                f"no grammar state after draft token {i - 1}: the grammar refuses draft token {self.n_allowed}")
        while self._at < i:
            self._steps.append(self._gm.consume([self.draft[self._at]]))
            self._at += 1
        if i < self._at:
            self._gm.rollback(sum(self._steps[i:]))
            del self._steps[i:]
            self._at = i

    def __getitem__(self, i: int) -> np.ndarray:
        row = self._rows.get(i)
        if row is None:
            self._goto(i)
            row = self._rows[i] = self._gm.mask()
            self.rows_computed += 1
        return row

    def allows(self, i: int, token: int) -> bool:
        token = int(token)
        if i < len(self.draft) and token == self.draft[i]:
            return i < self.n_allowed
        if i in self._rows:
            row = self._rows[i]
            return 0 <= token < len(row) and bool(row[token])
        self._goto(i)
        return self._gm.allows(token)

    def close(self) -> None:
        self._goto(0)

    def __enter__(self) -> DraftMasks:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_executor_obj = None


def _executor():
    global _executor_obj
    with _cache_lock:
        if _executor_obj is None:
            _executor_obj = _llg().LLExecutor(num_threads=1)  # one matcher per call: no thread pool to share
        return _executor_obj
