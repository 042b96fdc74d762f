"""Cross-tokenizer drafter: a small model with a different vocabulary drafts *text*.

The oracle's committed tokens are rendered to bytes, re-tokenized with the
drafter's tokenizer (its KV prefix is reused through ``sync``), the drafter
continues greedily, and its text is re-tokenized in the oracle's vocabulary. The
proposal is a deterministic draft (q = 1 on each proposed token), so greedy
verification and rejection sampling both stay exact whatever the drafter does.
"""

from __future__ import annotations

import numpy as np

from .base import Draft


class BridgeDrafter:
    name = "bridge"
    cheap = False  # a forward pass per drafter token: the policy decides the length before it runs
    multi_candidate = False

    def __init__(self, lm, oracle, *, p_min: float = 0.4, overdraft: float = 1.5) -> None:
        self.lm = lm  # drafter backend (LlamaModel or OnnxCausalLM)
        self.oracle = oracle  # anything with tokenize / token_bytes / n_vocab (the oracle's tokenizer)
        self.p_min = p_min
        self.overdraft = overdraft  # drafter tokens per wanted oracle token (tokenizers split differently)
        self._ctx_bytes: list[bytes] = []

    def begin(self, prompt_tokens: list[int]) -> None:
        self._ctx_bytes = []

    def _context_bytes(self, context: list[int]) -> bytes:
        # cache rendered pieces so a long context is not re-rendered from scratch every step
        cb = self._ctx_bytes
        if len(cb) > len(context):
            del cb[len(context):]
        for t in context[len(cb):]:
            cb.append(self.oracle.token_bytes(t))
        return b"".join(cb)

    def propose(self, context: list[int], max_tokens: int, **kw) -> Draft:
        if max_tokens <= 0:
            return Draft(source=self.name)
        text = self._context_bytes(context)
        d_ctx = self.lm.tokenize(text, add_bos=self.lm.add_bos, special=True)
        if not d_ctx:
            return Draft(source=self.name)
        # keep the drafter's context inside its window: draft from the tail only
        room = self.lm.n_ctx - int(max_tokens * self.overdraft) - 4
        if len(d_ctx) > room:
            return Draft(source=self.name)
        logits = self.lm.sync(d_ctx)
        passes = 1
        out: list[int] = []
        n_want = max(1, int(max_tokens * self.overdraft + 0.999))
        for i in range(n_want):
            tok = int(np.argmax(logits))
            if self.lm.is_eog(tok):
                break
            if self.p_min > 0:
                z = (logits - logits[tok]).astype(np.float64)
                if 1.0 / float(np.exp(z).sum()) < self.p_min:
                    break
            out.append(tok)
            if i + 1 < n_want:
                logits = self.lm.step(tok)
                passes += 1
        if not out:
            return Draft(passes=passes, source=self.name)
        draft_bytes = self.lm.detokenize(out)
        toks = self._retokenize(context, draft_bytes)
        # the last oracle token may be a partial word the oracle would split differently
        if len(toks) > 1:
            toks = toks[:-1]
        toks = [t for t in toks[:max_tokens]]
        if any(not (0 <= t < self.oracle.n_vocab) for t in toks):
            return Draft(passes=passes, source=self.name)
        return Draft(tokens=toks, passes=passes, source=self.name)

    def _retokenize(self, context: list[int], draft_bytes: bytes) -> list[int]:
        """Oracle tokens for the drafted bytes, tokenized together with the context's last token
        so merges across the boundary match what the oracle itself would produce."""
        if context:
            tail_tok = context[-1]
            tail = self.oracle.token_bytes(tail_tok)
            toks = self.oracle.tokenize(tail + draft_bytes, add_bos=False, special=False)
            if toks and toks[0] == tail_tok:
                return toks[1:]
        return self.oracle.tokenize(draft_bytes, add_bos=False, special=False)

    def accepted(self, context: list[int], n_accepted: int, n_drafted: int) -> None:
        pass

    def close(self) -> None:
        self.lm.close()
