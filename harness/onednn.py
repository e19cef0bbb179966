"""fp32 matrix products through oneDNN, on CPUs where torch's default BLAS multiplies slower.

torch multiplies fp32 on the CPU with MKL. On a 2-vCPU AMD EPYC (avx512_bf16, no
amx_bf16; 2026-12-05) MKL ran the 3,200-row products of a ViT-B-32 batch at 190-220
GFLOP/s and oneDNN's linear kernel (the one torch.compile's CPU code calls) at 360-470, both
in IEEE fp32 (largest error 8.7e-7 of the largest result against MKL's 4.1e-7; float64
reference): the open_clip ViT-B-32 embedded 1.8x faster. ``Products`` sends a forward
pass's fp32 products there; ``runtime.onednn_pays`` says, by timing them here, whether
it pays. Imported only where torch already is.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


def kernel() -> Any:
    """oneDNN's linear kernel, ``(x, weight, bias, "none", [], "")``; None where this torch
    has no oneDNN or no such kernel."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None


class Products(TorchDispatchMode):
    """Inside, outside autograd: each fp32 CPU ``mm`` and ``addmm`` (a 1-D bias, no
    scaling) runs as oneDNN's linear kernel; anything else, or anything the kernel refuses,
    runs as it would. Under ``torch.inference_mode`` torch keeps ``linear`` and ``matmul``
    whole, so use ``torch.no_grad``. ``sent`` counts the products it redirected."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = kernel()
        self.sent = 0

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple = (), kwargs: Any = None
    ) -> Any:
        if kwargs or self.linear is None or torch.is_grad_enabled():
            return func(*args, **(kwargs or {}))
        if func is aten.mm.default:
            (x, w), bias = args, None
        elif func is aten.addmm.default and args[0].dim() == 1:
            bias, x, w = args
        else:
            return func(*args)
        tensors = (x, w) if bias is None else (x, w, bias)
        if any(t.dtype != torch.float32 or t.device.type != "cpu" for t in tensors):
            return func(*args)
        try:
            out = self.linear(x, w.t(), bias, "none", [], "")
        except RuntimeError:
            return func(*args)
        self.sent += 1
        return out
