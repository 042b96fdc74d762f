"""An ONNX graph being written: nodes, initializers (the large ones in one page-aligned external data
file onnxruntime can memory-map) and the checked model file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

OPSET = 17
IR_VERSION = 8  # opset 17's IR; older onnxruntime builds on phones refuse newer IR versions
_EXTERNAL_MIN_BYTES = 1024
_ALIGN = 4096  # page-aligned external data lets onnxruntime memory-map it


class Graph:
    """Collects nodes and initializers; big initializers go to one external data file."""

    def __init__(self, data_path: Path) -> None:
        from onnx import helper

        self.helper = helper
        self.nodes: list = []
        self.inits: list = []
        self._names: set[str] = set()
        self._n = 0
        self._data_path = data_path
        self._data = open(data_path, "wb")
        self.uses_contrib = False

    def close(self) -> None:
        if not self._data.closed:
            self._data.close()

    def fresh(self, base: str) -> str:
        self._n += 1
        return f"{base}__{self._n}"

    def init(self, name: str, arr: np.ndarray) -> str:
        from onnx import TensorProto, numpy_helper

        if name in self._names:
            raise AssertionError(f"duplicate initializer {name}")
        self._names.add(name)
        arr = np.ascontiguousarray(arr)
        if arr.nbytes < _EXTERNAL_MIN_BYTES:
            self.inits.append(numpy_helper.from_array(arr, name))
            return name
        t = TensorProto()
        t.name = name
        t.data_type = self.helper.np_dtype_to_tensor_dtype(arr.dtype)
        t.dims.extend(arr.shape)
        pos = self._data.tell()
        offset = (pos + _ALIGN - 1) // _ALIGN * _ALIGN
        if offset > pos:
            self._data.write(b"\x00" * (offset - pos))
        self._data.write(arr.tobytes())
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self._data_path.name), ("offset", str(offset)), ("length", str(arr.nbytes))):
            e = t.external_data.add()
            e.key, e.value = key, value
        self.inits.append(t)
        return name

    def const(self, value, dtype=np.int64, name: str | None = None) -> str:
        return self.init(name or self.fresh("c"), np.asarray(value, dtype=dtype))

    def op(self, op_type: str, inputs: list[str], *, outputs: int | list[str] = 1, domain: str = "", **attrs):
        if isinstance(outputs, int):
            outs = [self.fresh(op_type.lower()) for _ in range(outputs)]
        else:
            outs = list(outputs)
        if domain:
            self.uses_contrib = True
        self.nodes.append(self.helper.make_node(op_type, inputs, outs, name=self.fresh("n_" + op_type),
                                                domain=domain or None, **attrs))
        return outs[0] if len(outs) == 1 else outs

    def save(self, inputs, outputs, path: Path) -> None:
        """Write the model next to its data file and check it (by path, so the data is read lazily)."""
        import onnx
        from onnx import helper

        graph = helper.make_graph(self.nodes, "edgespec_llama", inputs, outputs, initializer=self.inits)
        opsets = [helper.make_opsetid("", OPSET)]
        if self.uses_contrib:
            opsets.append(helper.make_opsetid("com.microsoft", 1))
        model = helper.make_model(graph, opset_imports=opsets, producer_name="edgespec", ir_version=IR_VERSION)
        with path.open("wb") as f:
            f.write(model.SerializeToString())
        onnx.checker.check_model(str(path))  # by path: reads external data lazily
