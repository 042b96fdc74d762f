"""Tiny random-weight llama-architecture GGUF models for tests (written in milliseconds).

Why: engine tests need real llama.cpp models that load in milliseconds, with a
real byte-level BPE tokenizer that round-trips text, and controllable agreement
between oracle and drafter:

- ``vocab="c"`` has the byte tokens and no merge that text can use: a text has exactly one tokenization;
- ``vocab="a"`` and ``vocab="b"`` are two different tokenizers (the same 256 byte
  tokens, different merges, so different ids and segmentation of one text) for the
  cross-tokenizer path; two models with the same letter share ids exactly,
  whatever their seed or size (vocab a's "Ġthe" is never produced by tokenizing
  text: its merge is "Ġt he" but BPE reaches "Ġth e" first; a model can still
  generate it, a non-canonical tokenization real vocabularies have too);
- ``noise`` perturbs the weights drawn for ``seed``: a drafter with the oracle's
  seed and 5% noise agrees with the oracle's greedy choice ~80% of the time,
  one with another seed almost never.

Logits have a standard deviation of about 3, so greedy argmax varies from token
to token and softmax distributions are neither one-hot nor uniform.

Batch invariance of llama.cpp's CPU kernels on these models (measured with
llama-cpp-python 0.3.36 on x86 AVX-512, 1 and 2 threads; tests/test_tiny_gguf.py
checks each point). It depends on the kernels llama.cpp picks for a batch, not
on n_embd, head count or GQA shape (32..128 wide models behave alike):

- with flash attention off, any split of a sequence into batches of >= 2 tokens,
  each asking for >= 2 logits rows, gives bit-identical logits: every matmul then
  runs in llamafile's tinyBLAS, whose per-element summation order depends neither
  on the batch size nor on the thread split;
- asking for one row only (llama.cpp then runs the last layer's FFN and the
  output matmul on that row alone) takes the gemv path there: ~1e-6 off;
- a batch of exactly one token takes ggml's gemv (``vec_dot``) path throughout: with
  F32 weights and an F32 KV cache its logits differ by ~4e-6; with the default
  F16 KV cache by ~1e-3 (the small difference is amplified where values are
  rounded to F16);
- with Q8_0 weights (``dtype="q8_0"``), flash attention off and an F32 KV cache,
  even one-token batches are bit-identical: the weight dot products are integer;
- flash attention (llama.cpp's default "auto" turns it on for CPU) has three
  kernels: one-token, 2..63-token and >= 64-token (tiled) batches; logits agree
  bitwise only within one class (differences ~1e-2 across them).

So for the engine: verify batches (2..63 tokens, all rows requested) are
interchangeable bit for bit under the defaults; a bitwise "oracle's own output"
reference must not decode one token at a time (re-decode the previous token with
the new one and ask for both rows) and must prefill exactly as the engine does.
Otherwise greedy argmax flips at near-ties: measured 2-3 times in 4000 steps of
the seed-1 oracle, so strict identity against one-token steps is luck.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# appended after the byte tokens and merges, in this order: BOS = <|endoftext|>, EOS = <|im_end|>
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCABS = ("a", "b", "c")
DTYPES = ("f32", "q8_0")

TOKEN_TYPE_NORMAL = 1  # llama.cpp's LLAMA_TOKEN_TYPE_NORMAL
TOKEN_TYPE_CONTROL = 3  # LLAMA_TOKEN_TYPE_CONTROL: never produced from plain text, rendered only on request

# Merged tokens, in merge-rank order ("Ġ" is GPT-2's stand-in for the space byte); each word becomes one
# token. Do not edit: the token ids (specials included) of every model written so far depend on it.
_WORDS = {
    "a": ["th", "he", "in", "er", "an", "Ġt", "Ġa", "re", "on", "Ġth", "Ġthe", "en", "at", "ed", "es", "or",
          "Ġs", "Ġw", "Ġb", "Ġm", "ar", "ing", "Ġc", "Ġp", "le", "Ġo", "Ġv", "Ġl", "Ġr", "Ġd", "ow", "Ġro", "Ġrow"],
    # c: the byte tokens and one merge no UTF-8 text has (bytes 0xFF 0xFF; llama.cpp wants a merge), so a text
    # has one tokenization and any sequence the model writes is the canonical one (the office rewrite's exact
    # test: its prompts are text, tokenized again by the server)
    "c": ["ÿÿ"],
    "b": ["ne", "Ġv", "in", "ro", "Ġw", "ow", "Ġro", "Ġrow", "Ġvi", "Ġvin", "Ġvine", "th", "Ġth", "Ġl", "ea",
          "Ġle", "Ġlea", "Ġleaf", "Ġm", "ot", "Ġmo", "Ġmot", "Ġmoth", "he", "Ġthe", "an", "Ġan", "er"],
}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (what byte-level BPE vocabularies store)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """Segment one pre-token the way llama.cpp's BPE does: repeatedly apply the lowest-rank merge."""
    parts = list(word)
    while len(parts) > 1:
        rank, i = min((ranks.get((parts[j], parts[j + 1]), len(ranks)), j) for j in range(len(parts) - 1))
        if rank == len(ranks):
            break
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts


@lru_cache(maxsize=None)
def _vocab(letter: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    b2u = _bytes_to_unicode()
    toks = [b2u[b] for b in range(256)]
    known = set(toks)
    merges: list[str] = []
    for w in _WORDS[letter]:
        # the first split whose halves are tokens already (kept as first written: models in use depend on it)
        for i in range(1, len(w)):
            left, right = w[:i], w[i:]
            if left in known and right in known:
                merges.append(f"{left} {right}")
                toks.append(w)
                known.add(w)
                break
        else:  # a word list that would need intermediate tokens is a bug in this module
            raise AssertionError(f"vocab {letter}: no merge builds {w!r}")
    return tuple(toks + SPECIALS), tuple(merges)


def tiny_vocab(letter: str) -> tuple[list[str], list[str]]:
    """(tokens, merges) of vocabulary ``letter``: 256 byte tokens, the merged words, then SPECIALS."""
    if letter not in VOCABS:
        raise ValueError(f"vocab must be one of {list(VOCABS)}, not {letter!r}")
    toks, merges = _vocab(letter)
    return list(toks), list(merges)


def tiny_token_types(letter: str) -> list[int]:
    """llama.cpp token types for ``tiny_vocab(letter)``: normal, except the specials are control tokens."""
    toks, _ = tiny_vocab(letter)
    return [TOKEN_TYPE_NORMAL] * (len(toks) - len(SPECIALS)) + [TOKEN_TYPE_CONTROL] * len(SPECIALS)


def _check_args(vocab, n_layer, n_embd, n_head, n_head_kv, n_ff, n_ctx_train, seed, dtype, noise, noise_seed) -> None:
    """Refuse shapes llama.cpp would reject (or abort on) with a message naming the argument."""
    if vocab not in VOCABS:
        raise ValueError(f"vocab must be one of {list(VOCABS)}, not {vocab!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, not {dtype!r}")
    for name, v in [("n_layer", n_layer), ("n_embd", n_embd), ("n_head", n_head), ("n_head_kv", n_head_kv),
                    ("n_ff", n_ff), ("n_ctx_train", n_ctx_train)]:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, not {v!r}")
    for name, v in [("seed", seed), ("noise_seed", noise_seed)]:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, not {v!r}")
    if n_embd % n_head:
        raise ValueError(f"n_embd ({n_embd}) must be a multiple of n_head ({n_head})")
    if (n_embd // n_head) % 2:
        raise ValueError(f"head size n_embd/n_head = {n_embd // n_head} must be even (RoPE rotates pairs)")
    if n_head % n_head_kv:
        raise ValueError(f"n_head ({n_head}) must be a multiple of n_head_kv ({n_head_kv})")
    if dtype == "q8_0" and (n_embd % 32 or n_ff % 32):
        raise ValueError(f"q8_0 needs n_embd and n_ff to be multiples of 32 (got {n_embd}, {n_ff})")
    if isinstance(noise, bool) or not (isinstance(noise, (int, float)) and np.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite number >= 0, not {noise!r}")


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
    dtype: str = "f32",
    noise: float = 0.0,
    noise_seed: int = 12345,
    chat_template: str | None = CHATML,
) -> Path:
    """Write a random-weight llama GGUF to ``path`` (atomically) and return it as a Path.

    ``noise`` adds ``noise`` times each tensor's scale of independent Gaussian
    noise (drawn from ``noise_seed``) to the weights drawn for ``seed``.
    ``dtype="q8_0"`` stores the matrices as Q8_0 (norms stay F32).
    Raises ValueError on bad shapes or names, FileNotFoundError when the folder
    is missing; on any failure an existing file at ``path`` is left untouched.
    """
    import gguf
    from gguf import GGMLQuantizationType as Q

    _check_args(vocab, n_layer, n_embd, n_head, n_head_kv, n_ff, n_ctx_train, seed, dtype, noise, noise_seed)
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder for the model does not exist: {path.parent}")
    toks, merges = tiny_vocab(vocab)
    n_vocab = len(toks)
    head_dim = n_embd // n_head
    quantize = dtype == "q8_0"

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    w = gguf.GGUFWriter(str(tmp), "llama")
    try:
        w.add_name(f"tiny-{vocab}-{n_layer}l-{n_embd}e-s{seed}" + (f"-n{noise:g}" if noise else ""))
        w.add_block_count(n_layer)
        w.add_context_length(n_ctx_train)
        w.add_embedding_length(n_embd)
        w.add_feed_forward_length(n_ff)
        w.add_head_count(n_head)
        w.add_head_count_kv(n_head_kv)
        w.add_rope_dimension_count(head_dim)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_rope_freq_base(10000.0)
        w.add_vocab_size(n_vocab)
        w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quantize else gguf.LlamaFileType.ALL_F32)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("gpt-2")
        w.add_token_list(toks)
        w.add_token_types(tiny_token_types(vocab))
        w.add_token_merges(merges)
        w.add_bos_token_id(toks.index("<|endoftext|>"))
        w.add_eos_token_id(toks.index("<|im_end|>"))
        w.add_add_bos_token(False)
        if chat_template:
            w.add_chat_template(chat_template)

        # One stream per model, drawn tensor by tensor in file order (float64, then rounded): the weights of
        # every fixture in use depend on exactly this order.
        rng = np.random.default_rng(seed)
        nrng = np.random.default_rng(noise_seed)

        def matrix(name: str, rows: int, cols: int, scale: float) -> None:
            x = rng.standard_normal((rows, cols)) * scale
            if noise:
                x = x + nrng.standard_normal((rows, cols)) * scale * noise
            x = x.astype(np.float32)
            if quantize:
                w.add_tensor(name, gguf.quants.quantize(x, Q.Q8_0), raw_dtype=Q.Q8_0)
            else:
                w.add_tensor(name, x)

        def norm(name: str) -> None:
            w.add_tensor(name, np.ones(n_embd, np.float32))

        matrix("token_embd.weight", n_vocab, n_embd, 1.0)
        for i in range(n_layer):
            b = f"blk.{i}"
            norm(f"{b}.attn_norm.weight")
            matrix(f"{b}.attn_q.weight", n_embd, n_embd, n_embd ** -0.5)
            matrix(f"{b}.attn_k.weight", head_dim * n_head_kv, n_embd, n_embd ** -0.5)
            matrix(f"{b}.attn_v.weight", head_dim * n_head_kv, n_embd, n_embd ** -0.5)
            matrix(f"{b}.attn_output.weight", n_embd, n_embd, n_embd ** -0.5)
            norm(f"{b}.ffn_norm.weight")
            matrix(f"{b}.ffn_gate.weight", n_ff, n_embd, n_embd ** -0.5)
            matrix(f"{b}.ffn_up.weight", n_ff, n_embd, n_embd ** -0.5)
            matrix(f"{b}.ffn_down.weight", n_embd, n_ff, n_ff ** -0.5)
        norm("output_norm.weight")
        # the final norm makes hidden rows unit-RMS, so this scale gives logits with a std of about 3
        matrix("output.weight", n_vocab, n_embd, 3.0 * n_embd ** -0.5)

        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, path)
    except BaseException:
        try:
            w.close()
        except Exception:
            pass
        tmp.unlink(missing_ok=True)
        raise
    return path
