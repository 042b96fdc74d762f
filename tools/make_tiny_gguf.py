#!/usr/bin/env python
"""Write a tiny random-weight GGUF: python tools/make_tiny_gguf.py OUT.gguf --vocab a --layers 2 --seed 1"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgespec.testing.tiny_gguf import write_tiny_gguf  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("out")
ap.add_argument("--vocab", default="a", choices=["a", "b"])
ap.add_argument("--layers", type=int, default=2)
ap.add_argument("--embd", type=int, default=64)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--noise", type=float, default=0.0)
a = ap.parse_args()
print(write_tiny_gguf(a.out, vocab=a.vocab, n_layer=a.layers, n_embd=a.embd, seed=a.seed, noise=a.noise))
