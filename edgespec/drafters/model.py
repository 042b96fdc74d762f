"""Same-vocabulary model drafter: a smaller GGUF with the oracle's token table.

It decodes greedily (or samples, recording q for rejection sampling) from its own
KV cache, which ``sync`` keeps equal to the oracle's committed tokens, so after a
rejection only the rejected tail is dropped and re-evaluated.
"""

from __future__ import annotations

import numpy as np

from ..acceptance import logits_to_probs, validate_sampling
from ..acceptance import sample as draw
from .base import Draft, SamplingSpec


class ModelDrafter:
    name = "model"
    cheap = False  # a forward pass per token: the policy decides the length before it runs
    multi_candidate = False

    def __init__(self, lm, *, oracle_vocab: int, p_min: float = 0.5, seed: int | None = None) -> None:
        self.lm = lm
        self.oracle_vocab = oracle_vocab
        self.p_min = p_min  # stop drafting when the drafter's top probability falls below this
        self.rng = np.random.default_rng(seed)

    def begin(self, prompt_tokens: list[int]) -> None:
        pass  # the KV prefix is reused through sync()

    def propose(self, context: list[int], max_tokens: int, *, sample: SamplingSpec | None = None) -> Draft:
        sample_spec = sample
        if max_tokens <= 0:
            return Draft(source=self.name)
        params = None
        if sample_spec is not None and sample_spec.temperature > 0:
            params = validate_sampling(sample_spec.temperature, sample_spec.top_k, sample_spec.top_p)
        logits = self.lm.sync(context)
        passes = 1
        toks: list[int] = []
        qrows: list[np.ndarray] = []
        for i in range(max_tokens):
            if params is None:
                tok = int(np.argmax(logits))
                if self.p_min > 0:
                    z = logits - logits[tok]
                    p_top = 1.0 / float(np.exp(z.astype(np.float64)).sum())
                    if p_top < self.p_min:
                        break
            else:
                q = logits_to_probs(logits, params)
                tok = draw(q, self.rng)
                qrows.append(self._to_oracle_vocab(q))
            if tok >= self.oracle_vocab:  # a drafter-only token the oracle cannot verify
                if params is not None:
                    qrows.pop()
                break
            if self.lm.is_eog(tok):  # propose the end and let the oracle confirm it
                toks.append(tok)
                break
            toks.append(tok)
            if i + 1 < max_tokens:
                logits = self.lm.step(tok)
                passes += 1
        probs = np.stack(qrows) if params is not None and qrows else None
        return Draft(tokens=toks, probs=probs, passes=passes, source=self.name)

    def _to_oracle_vocab(self, q: np.ndarray) -> np.ndarray:
        if len(q) == self.oracle_vocab:
            return q
        out = np.zeros(self.oracle_vocab, dtype=q.dtype)
        n = min(len(q), self.oracle_vocab)
        out[:n] = q[:n]
        return out / out.sum()

    def accepted(self, context: list[int], n_accepted: int, n_drafted: int) -> None:
        pass

    def close(self) -> None:
        self.lm.close()
