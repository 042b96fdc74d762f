"""ONNX Runtime drafter: the drafter's weights run on onnxruntime (as on a phone's NPU/XNNPACK),
the oracle stays on llama.cpp. The drafting logic is the same as for GGUF drafters: a same-vocabulary
model drafter when the token tables agree, the cross-tokenizer bridge otherwise."""

from __future__ import annotations

from .bridge import BridgeDrafter
from .model import ModelDrafter


def _same_vocab(lm, oracle) -> bool:
    from .. import IncompatibleModelsError
    from ..llama import check_same_vocab

    try:
        check_same_vocab(oracle, lm)
    except IncompatibleModelsError:
        return False
    return True


def make_onnx_drafter(name_or_path: str, oracle, *, n_threads: int = 1, providers=("CPUExecutionProvider",),
                      fetch: bool = False):
    """Export (once, cached) and load the drafter on onnxruntime, wrapped in the fitting drafter."""
    from ..onnx.convert import export_onnx
    from ..onnx.runtime import OnnxCausalLM

    onnx_dir = export_onnx(name_or_path, fetch=True)
    lm = OnnxCausalLM(onnx_dir, providers=providers, n_threads=n_threads)
    if _same_vocab(lm, oracle):
        drafter = ModelDrafter(lm, oracle_vocab=oracle.n_vocab)
    else:
        drafter = BridgeDrafter(lm, oracle)
    drafter.name = "onnx"
    return drafter
