#!/usr/bin/env python
"""Write a tiny random-weight llama GGUF (for tests, demos and benchmarks of the plumbing).

    python tools/make_tiny_gguf.py OUT.gguf --vocab a --layers 2 --seed 1
    python tools/make_tiny_gguf.py drafter.gguf --seed 1 --noise 0.1      # agrees with the seed-1 oracle
    python tools/make_tiny_gguf.py other.gguf --vocab b                     # another tokenizer
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgespec.testing.tiny_gguf import DTYPES, VOCABS, write_tiny_gguf  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="path of the .gguf to write (replaced atomically if it exists)")
    ap.add_argument("--vocab", default="a", choices=VOCABS, help="tokenizer: same letter = same token ids")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--embd", type=int, default=64, help="embedding width")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--ff", type=int, default=128, help="feed-forward width")
    ap.add_argument("--ctx", type=int, default=2048, help="training context length recorded in the metadata")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise", type=float, default=0.0, help="relative weight noise on top of --seed's weights")
    ap.add_argument("--noise-seed", type=int, default=12345)
    ap.add_argument("--dtype", default="f32", choices=DTYPES)
    ap.add_argument("--no-chat-template", action="store_true", help="leave tokenizer.chat_template out")
    a = ap.parse_args(argv)
    kwargs = dict(chat_template=None) if a.no_chat_template else {}
    try:
        out = write_tiny_gguf(a.out, vocab=a.vocab, n_layer=a.layers, n_embd=a.embd, n_head=a.heads,
                              n_head_kv=a.kv_heads, n_ff=a.ff, n_ctx_train=a.ctx, seed=a.seed, noise=a.noise,
                              noise_seed=a.noise_seed, dtype=a.dtype, **kwargs)
    except (ValueError, OSError) as e:
        ap.error(str(e))  # exits 2 with the message, no traceback
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
