"""The tokenizer side of an export: a vocab-only GGUF llama.cpp tokenizes with, and tokenizer_info.json.

Tokenization stays with llama.cpp: the vocab-only GGUF (the source's metadata, no tensors) loads with
``vocab_only=True`` in milliseconds. Re-implementing each pre-tokenizer's regex and BPE/SPM rules in
Python would be a second tokenizer that can silently disagree with the oracle's. ``tokenizer_info.json``
still records everything a non-llama.cpp consumer needs (tokens, rendered piece bytes, types, merges,
special ids, add_bos, chat template, pre-tokenizer name).
"""

from __future__ import annotations

from pathlib import Path

from . import UnsupportedModelError
from .gguf_source import metadata


def write_vocab_gguf(reader, path: Path) -> None:
    """The source's metadata without tensors: what llama.cpp needs to tokenize with vocab_only."""
    import gguf

    arch = metadata(reader, "general.architecture")
    w = gguf.GGUFWriter(str(path), arch)
    for key, f in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or not f.types:
            continue
        main = f.types[0]
        if main == gguf.GGUFValueType.ARRAY:
            sub = f.types[-1]
            if sub == gguf.GGUFValueType.STRING:
                val = [bytes(f.parts[i]) for i in f.data]  # raw bytes: tokens need not be valid UTF-8
            else:
                val = f.contents()
            if len(f.types) > 2:
                raise UnsupportedModelError(f"nested GGUF array {key} is not supported")
            w.add_key_value(key, val, main, sub_type=sub)
        elif main == gguf.GGUFValueType.STRING:
            w.add_key_value(key, bytes(f.parts[-1]), main)
        else:
            w.add_key_value(key, f.contents(), main)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def tokenizer_info(reader, vocab_path: Path) -> dict:
    """What each token is and renders to, read through llama.cpp from the vocab-only file at ``vocab_path``."""
    import gguf

    from ..llama import LlamaModel

    def arr(key):
        f = reader.fields.get(key)
        if f is None or not f.types:
            return None
        if f.types[-1] == gguf.GGUFValueType.STRING:  # lenient: a token need not be valid UTF-8
            return [bytes(f.parts[i]).decode("utf-8", "replace") for i in f.data]
        return list(f.contents())

    lm = LlamaModel(vocab_path, vocab_only=True)
    try:
        pieces = [lm.token_bytes(i).hex() for i in range(lm.n_vocab)]
        info = {
            "model": metadata(reader, "tokenizer.ggml.model"),
            "pre": metadata(reader, "tokenizer.ggml.pre"),
            "n_vocab": lm.n_vocab,
            "tokens": arr("tokenizer.ggml.tokens"),
            "pieces_hex": pieces,  # what each token renders to (llama_token_to_piece, special=True)
            "token_type": arr("tokenizer.ggml.token_type"),
            "scores": arr("tokenizer.ggml.scores"),
            "merges": arr("tokenizer.ggml.merges"),
            "bos_token_id": lm.bos_token(),
            "eos_token_id": lm.eos_token(),
            "eog_token_ids": [i for i in range(lm.n_vocab) if lm.is_eog(i)],
            "add_bos": lm.add_bos,
            "add_eos": bool(metadata(reader, "tokenizer.ggml.add_eos_token", False)),
            "add_space_prefix": metadata(reader, "tokenizer.ggml.add_space_prefix"),
            "chat_template": lm.chat_template(),
            "tokenize_with": vocab_path.name,
        }
    finally:
        lm.close()
    return info
