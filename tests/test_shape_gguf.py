"""Random-weight GGUFs of a model's shape: valid blocks at the asked scale, a file llama.cpp loads, no partial file."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgespec.projection import ModelShape
from edgespec.testing.shape_gguf import random_quant_rows, shape_file_bytes, write_shape_gguf

TINY = ModelShape("tiny", n_embd=256, n_layer=2, n_head=4, n_head_kv=2, n_ff=512, n_vocab=1000)


def test_random_quant_blocks_dequantize_to_the_requested_scale():
    import gguf

    rng = np.random.default_rng(0)
    for qtype, gtype in (("q4_0", gguf.GGMLQuantizationType.Q4_0), ("q6_k", gguf.GGMLQuantizationType.Q6_K)):
        raw = random_quant_rows(rng, 64, 512, qtype, std=0.05)
        x = gguf.quants.dequantize(raw, gtype)
        assert x.shape == (64, 512)
        assert np.isfinite(x).all()
        assert x.std() == pytest.approx(0.05, rel=0.25)
    with pytest.raises(ValueError, match="multiple"):
        random_quant_rows(rng, 4, 100, "q4_0", 0.1)


def test_tiny_shape_end_to_end(tmp_path):
    import gguf

    from edgespec.calibrate import measure_curve
    from edgespec.llama import LlamaModel

    path = write_shape_gguf(tmp_path / "tiny.gguf", TINY)
    reader = gguf.GGUFReader(str(path))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.1.ffn_down.weight"] == "Q4_0" and types["output.weight"] == "Q6_K"
    tensor_bytes = sum(int(t.n_bytes) for t in reader.tensors)
    assert tensor_bytes == shape_file_bytes(TINY)

    with LlamaModel(path, n_ctx=128, n_threads=1) as model:
        assert model.n_vocab == TINY.n_vocab  # padded to the shape's vocabulary, not the tokenizer's core
        assert model.detokenize(model.tokenize("vine row 12")) == b"vine row 12"
        logits = model.decode(model.tokenize("the vineyard"))
        assert np.isfinite(logits).all()
        curve = measure_curve(model, (1, 2, 4), context_len=32, repeats=1)
    assert curve.sizes == [1, 2, 4]
    assert all(math.isfinite(s) and s > 0 for s in curve.seconds)


def test_bad_shape_leaves_no_partial_file(tmp_path):
    bad = ModelShape("odd", n_embd=96, n_layer=1, n_head=4, n_head_kv=2, n_ff=200, n_vocab=400)  # 200 % 32 != 0
    with pytest.raises(ValueError, match="multiple"):
        write_shape_gguf(tmp_path / "odd.gguf", bad)
    assert not (tmp_path / "odd.gguf").exists()
    with pytest.raises(ValueError, match="too small"):
        write_shape_gguf(tmp_path / "v.gguf", ModelShape("v", 256, 1, 4, 2, 512, 100))
