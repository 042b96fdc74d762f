"""Tiny random-weight llama-architecture GGUF models for tests (written in milliseconds).

Why: engine tests need real llama.cpp models that load in milliseconds, with a
real byte-level BPE tokenizer that round-trips text, F32 weights (llama.cpp's CPU
kernels are batch-invariant on them, so greedy identity can be strict) and
controllable agreement between oracle and drafter:

- ``vocab="a"`` and ``vocab="b"`` are two different tokenizers (different merges),
  for cross-tokenizer tests; two models with the same letter share ids exactly;
- ``noise`` perturbs the weights drawn for ``seed``: a drafter with the oracle's
  seed and a little noise agrees with it most of the time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# merges: each word is built from two tokens that already exist ("Ġ" is GPT-2's byte for a space)
_WORDS = {
    "a": ["th", "he", "in", "er", "an", "Ġt", "Ġa", "re", "on", "Ġth", "Ġthe", "en", "at", "ed", "es", "or",
          "Ġs", "Ġw", "Ġb", "Ġm", "ar", "ing", "Ġc", "Ġp", "le", "Ġo", "Ġv", "Ġl", "Ġr", "Ġd", "ow", "Ġro", "Ġrow"],
    "b": ["ne", "Ġv", "in", "ro", "Ġw", "ow", "Ġro", "Ġrow", "Ġvi", "Ġvin", "Ġvine", "th", "Ġth", "Ġl", "ea",
          "Ġle", "Ġlea", "Ġleaf", "Ġm", "ot", "Ġmo", "Ġmot", "Ġmoth", "he", "Ġthe", "an", "Ġan", "er"],
}


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def tiny_vocab(letter: str) -> tuple[list[str], list[str]]:
    """(tokens, merges) of a small byte-level BPE vocabulary."""
    if letter not in _WORDS:
        raise ValueError(f"vocab must be one of {sorted(_WORDS)}")
    b2u = _bytes_to_unicode()
    toks = [b2u[b] for b in range(256)]
    known = set(toks)
    merges = []
    for w in _WORDS[letter]:
        for i in range(1, len(w)):
            a, b = w[:i], w[i:]
            if a in known and b in known:
                merges.append(f"{a} {b}")
                toks.append(w)
                known.add(w)
                break
    return toks + SPECIALS, merges


def write_tiny_gguf(
    path: str | Path,
    *,
    vocab: str = "a",
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 4,
    n_head_kv: int = 2,
    n_ff: int = 128,
    n_ctx_train: int = 2048,
    seed: int = 0,
    noise: float = 0.0,
    noise_seed: int = 12345,
    chat_template: str | None = CHATML,
) -> Path:
    import gguf

    path = Path(path)
    toks, merges = tiny_vocab(vocab)
    V = len(toks)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(f"tiny-{vocab}-{n_layer}l-s{seed}")
    w.add_block_count(n_layer)
    w.add_context_length(n_ctx_train)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_file_type(0)  # all F32
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(toks)
    w.add_token_types([1] * (V - len(SPECIALS)) + [3] * len(SPECIALS))  # 3 = control
    w.add_token_merges(merges)
    w.add_bos_token_id(V - 3)
    w.add_eos_token_id(V - 1)  # <|im_end|>
    w.add_add_bos_token(False)
    if chat_template:
        w.add_chat_template(chat_template)

    rng = np.random.default_rng(seed)
    nrng = np.random.default_rng(noise_seed)

    def tensor(name, shape, scale):
        x = rng.standard_normal(shape) * scale
        if noise:
            x = x + nrng.standard_normal(shape) * scale * noise
        w.add_tensor(name, x.astype(np.float32))

    hd = n_embd // n_head
    tensor("token_embd.weight", (V, n_embd), 1.0)
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, np.float32))
        tensor(f"blk.{i}.attn_q.weight", (n_embd, n_embd), n_embd ** -0.5)
        tensor(f"blk.{i}.attn_k.weight", (hd * n_head_kv, n_embd), n_embd ** -0.5)
        tensor(f"blk.{i}.attn_v.weight", (hd * n_head_kv, n_embd), n_embd ** -0.5)
        tensor(f"blk.{i}.attn_output.weight", (n_embd, n_embd), n_embd ** -0.5)
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, np.float32))
        tensor(f"blk.{i}.ffn_gate.weight", (n_ff, n_embd), n_embd ** -0.5)
        tensor(f"blk.{i}.ffn_up.weight", (n_ff, n_embd), n_embd ** -0.5)
        tensor(f"blk.{i}.ffn_down.weight", (n_embd, n_ff), n_ff ** -0.5)
    w.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    # logits with a std of a few units: greedy is not always one token, sampling is not uniform
    tensor("output.weight", (V, n_embd), 3.0 * n_embd ** -0.5)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
