"""Test and benchmark helpers on the vineyard side: data shaped like a device's real history."""

from __future__ import annotations

import random
from dataclasses import dataclass

from edgespec.drafters.history import HistoryDrafter
from edgespec.drafters.history_index import HistoryIndex
from edgespec.testing.words import WordTokenizer

from .seeds import template_reports


def synthetic_season(n_reports: int, seed: int = 0) -> list[str]:
    """Reports in the style of the templates with varied blocks, numbers and sentence choices.

    The history drafter's tests and ``tools/bench_micro.py`` draft along the same season, so the
    work a test counts and the time the bench prints are of one workload."""
    rng = random.Random(seed)
    base = [t for _n, t in template_reports()]
    out = []
    for i in range(n_reports):
        words = rng.choice(base).split()
        for _ in range(12):
            j = rng.randrange(len(words))
            words[j] = rng.choice([str(rng.randrange(100)), f"B{rng.randrange(20)}", words[j].upper(), "rows"])
        out.append(f"report {i} " + " ".join(words))
    return out


@dataclass
class SeasonDrafting:
    """A history drafter over a synthetic season in memory, the prompt it begins on and a held-out
    report (another seed) to draft along; ``close()`` closes the index."""

    index: HistoryIndex
    drafter: HistoryDrafter
    tokenize: WordTokenizer
    prompt: list[int]
    target: list[int]

    def close(self) -> None:
        self.index.close()


def season_drafting(n_reports: int = 300, k_max: int = 16) -> SeasonDrafting:
    """The history drafter's long-season workload, begun on its prompt (see ``SeasonDrafting``)."""
    tok = WordTokenizer()
    index = HistoryIndex(":memory:", seed_templates=False)
    for text in synthetic_season(n_reports):
        index.add_report(text)
    drafter = HistoryDrafter(index, tok, "words", k_max=k_max)
    target = tok(synthetic_season(1, seed=99)[0])
    prompt = tok("Field note: block B4 rows 12-18 Write the scouting report.")
    drafter.begin(prompt)
    return SeasonDrafting(index, drafter, tok, prompt, target)
