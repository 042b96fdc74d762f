"""GGUF weight tensors as numpy: float32, or 32-element blocks in the layout MatMulNBits reads.

Blocks that are already 4/8-bit with 32-element blocks map *exactly*: Q4_0 (zero point 8), Q8_0 (zero
point 128, 8-bit), Q4_1 and Q4_K (scale + per-block minimum). Any other type is dequantized and
re-quantized (``quantize_rtn``: 4-bit round-to-nearest with a per-block minimum for matrices, 8-bit for
the embedding/output head).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import UnsupportedModelError

BLOCK = 32  # quantization block along the input dimension (GGUF's QK4_0/QK8_0, MatMulNBits block_size)


def dequantize_tensor(t) -> np.ndarray:
    """A GGUF tensor as float32 in numpy order (GGML's [ne0, ne1] becomes (ne1, ne0))."""
    from gguf import quants

    try:
        arr = quants.dequantize(t.data, t.tensor_type)
    except NotImplementedError as e:
        raise UnsupportedModelError(f"tensor {t.name}: {e}") from e
    shape = tuple(int(x) for x in reversed(list(t.shape)))
    return np.ascontiguousarray(arr, dtype=np.float32).reshape(shape)


@dataclass
class QMat:
    """A [N, K] matrix as 32-element blocks along K: ``w = (code - zp) * scale + min``.

    ``codes`` are unpacked (one uint8 per weight); ``mins`` is None when every block
    minimum is zero (symmetric types)."""

    bits: int
    codes: np.ndarray  # uint8 [N, K]
    scales: np.ndarray  # float32 [N, K // BLOCK]
    zp: int
    mins: np.ndarray | None = None  # float32 [N, K // BLOCK]

    @property
    def shape(self) -> tuple[int, int]:
        return self.codes.shape

    def dequantize(self) -> np.ndarray:
        n, k = self.codes.shape
        c = self.codes.reshape(n, k // BLOCK, BLOCK).astype(np.float32) - np.float32(self.zp)
        w = c * self.scales[:, :, None]
        if self.mins is not None:
            w = w + self.mins[:, :, None]
        return w.reshape(n, k)

    def centered(self) -> "QMat":
        """Same weights with the zero point mid-range: ``d·q + m = d·(q - 8) + (m + 8d)``.

        MatMulNBits' int8 path quantizes the activations; with codes 0..15 against a
        zero point of 0 that error is multiplied by uncentered codes and not cancelled
        by the (exact) block-minimum term, tripling the logit noise on SmolLM2.
        Centering leaves only the small residual minimum outside the quantized product."""
        mid = 1 << (self.bits - 1)
        if self.mins is None or self.zp == mid:
            return self
        mins = (self.mins + (mid - self.zp) * self.scales).astype(np.float32)
        return QMat(self.bits, self.codes, self.scales, mid, mins)

    def rows(self, idx: np.ndarray) -> "QMat":
        return QMat(self.bits, self.codes[idx], self.scales[idx], self.zp,
                    None if self.mins is None else self.mins[idx])

    def packed(self) -> np.ndarray:
        """MatMulNBits' B: uint8 [N, K / BLOCK, BLOCK * bits / 8], codes low nibble first along K."""
        n, k = self.codes.shape
        c = self.codes.reshape(n, k // BLOCK, BLOCK)
        if self.bits == 8:
            return np.ascontiguousarray(c)
        pairs = c.reshape(n, k // BLOCK, BLOCK // 2, 2)
        return np.ascontiguousarray(pairs[..., 0] | (pairs[..., 1] << np.uint8(4)))

    def packed_zero_points(self) -> np.ndarray:
        n, nb = self.scales.shape
        if self.bits == 8:
            return np.full(n * nb, self.zp, dtype=np.uint8)
        per_row = (nb + 1) // 2
        z = np.uint8(self.zp & 0x0F)
        return np.full((n, per_row), z | (z << np.uint8(4)), dtype=np.uint8).reshape(-1)


def _nibbles_q4(qs: np.ndarray) -> np.ndarray:
    """GGML 4-bit block bytes [nblk, 16] → codes [nblk, 32] (byte j: element j low, element j+16 high)."""
    return np.concatenate([qs & np.uint8(0x0F), qs >> np.uint8(4)], axis=-1)


def exact_qmat(t) -> QMat | None:
    """The tensor's own blocks as a QMat when the type maps onto MatMulNBits exactly, else None."""
    from gguf import GGMLQuantizationType as Q

    shape = tuple(int(x) for x in reversed(list(t.shape)))
    if len(shape) != 2:
        return None
    n, k = shape
    raw = np.asarray(t.data).reshape(n, -1).view(np.uint8)
    qt = t.tensor_type
    if qt == Q.Q4_0:
        blk = raw.reshape(n, k // 32, 18)
        d = blk[..., :2].copy().view(np.float16)[..., 0].astype(np.float32)
        codes = _nibbles_q4(blk[..., 2:]).reshape(n, k)
        return QMat(4, codes, d, 8)
    if qt == Q.Q4_1:
        blk = raw.reshape(n, k // 32, 20)
        d = blk[..., :2].copy().view(np.float16)[..., 0].astype(np.float32)
        m = blk[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
        codes = _nibbles_q4(blk[..., 4:]).reshape(n, k)
        return QMat(4, codes, d, 0, m)
    if qt == Q.Q8_0:
        blk = raw.reshape(n, k // 32, 34)
        d = blk[..., :2].copy().view(np.float16)[..., 0].astype(np.float32)
        codes = (blk[..., 2:].copy().view(np.int8).astype(np.int16) + 128).astype(np.uint8).reshape(n, k)
        return QMat(8, codes, d, 128)
    if qt == Q.Q4_K:
        from gguf.quants import Q4_K

        blk = raw.reshape(n * (k // 256), 144)
        d = blk[:, :2].copy().view(np.float16).astype(np.float32)  # [nsb, 1]
        dmin = blk[:, 2:4].copy().view(np.float16).astype(np.float32)
        sc, mn = Q4_K.get_scale_min(blk[:, 4:16])  # [nsb, 8] each
        qs = blk[:, 16:].reshape(-1, 4, 1, 32) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)
        codes = (qs & np.uint8(0x0F)).reshape(n, k)
        scales = (d * sc.astype(np.float32)).reshape(n, k // 32)
        mins = (-(dmin * mn.astype(np.float32))).reshape(n, k // 32)
        return QMat(4, codes, scales, 0, mins)
    return None


def quantize_rtn(w: np.ndarray, bits: int) -> QMat:
    """Round-to-nearest block quantization of a float matrix (for types with no exact mapping).

    4-bit is asymmetric (scale + minimum, like Q4_1); 8-bit is symmetric (like Q8_0)."""
    n, k = w.shape
    b = w.astype(np.float32).reshape(n, k // BLOCK, BLOCK)
    if bits == 4:
        lo = b.min(axis=-1)
        hi = b.max(axis=-1)
        d = (hi - lo) / 15.0
        inv = np.where(d > 0, 1.0 / np.where(d > 0, d, 1.0), 0.0)
        codes = np.clip(np.rint((b - lo[..., None]) * inv[..., None]), 0, 15).astype(np.uint8)
        return QMat(4, codes.reshape(n, k), d.astype(np.float32), 0, lo.astype(np.float32))
    if bits == 8:
        d = np.abs(b).max(axis=-1) / 127.0
        inv = np.where(d > 0, 1.0 / np.where(d > 0, d, 1.0), 0.0)
        q = np.clip(np.rint(b * inv[..., None]), -127, 127).astype(np.int16) + 128
        return QMat(8, q.astype(np.uint8).reshape(n, k), d.astype(np.float32), 128)
    raise ValueError(f"unsupported bit width {bits}")
