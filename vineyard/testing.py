"""Test and benchmark helpers on the vineyard side: data shaped like a device's real history."""

from __future__ import annotations

import random

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
