"""The ONNX Runtime drafter backend: a llama-architecture GGUF exported to ONNX and run on onnxruntime.

On phones the small drafter usually runs on ONNX Runtime (NNAPI, CoreML, QNN,
XNNPACK execution providers) while the oracle runs elsewhere. ``convert`` turns
the GGUF's tensors into an ONNX graph with a KV cache; ``runtime.OnnxCausalLM``
runs it behind the same draft-LM interface as ``edgespec.llama.LlamaModel`` so
the model and bridge drafters take either.

Imports are lazy: ``import edgespec.onnx`` must not pull in onnx/onnxruntime.
"""

from __future__ import annotations

from .. import EdgespecError, ModelFileError

__all__ = [
    "OnnxExportError",
    "UnsupportedModelError",
    "ProviderError",
    "convert_gguf_to_onnx",
    "export_onnx",
    "onnx_cache_dir",
    "OnnxCausalLM",
]


class UnsupportedModelError(ModelFileError):
    """A GGUF whose architecture or tensor layout the ONNX converter does not handle."""


class OnnxExportError(EdgespecError):
    """The conversion could not be written (disk full, unwritable directory, ...)."""


class ProviderError(EdgespecError, ValueError):
    """An execution provider that this onnxruntime build does not offer."""


def __getattr__(name: str):
    if name in ("convert_gguf_to_onnx", "export_onnx", "onnx_cache_dir"):
        from . import convert

        return getattr(convert, name)
    if name == "OnnxCausalLM":
        from .runtime import OnnxCausalLM

        return OnnxCausalLM
    raise AttributeError(name)
