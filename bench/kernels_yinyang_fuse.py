"""``yinyang_fuse`` (the stem fusion) for bench/kernels.py: its calls and its byte floor.

Byte floor (``e`` = element size, ``X`` = N*C*H*W):

* ``fwd-eval``, ``fwd-train``: e*3*X              (a, i, out)
* ``fwd+bwd``:   e*6*X                            (a, i, out, grad_out, grad_a, grad_i)
"""
from __future__ import annotations

from typing import Callable, List, Tuple

import torch

OP = "yinyang_fuse"
MODES = ("fwd-eval", "fwd-train", "fwd+bwd")  # eval and train forwards differ only by autograd bookkeeping


def shape_name(shape) -> str:
    """``64x16x16`` (C x H x W; the batch apart)."""
    return "x".join(map(str, shape[:3]))


def floor_bytes(n: int, c: int, h: int, w: int, elem: int, mode: str) -> int:
    return elem * n * c * h * w * (6 if mode == "fwd+bwd" else 3)


def build(impl: str, cfg, mode: str, shape, batch: int, dtype: torch.dtype, device: torch.device
          ) -> Tuple[Callable, List[torch.Tensor], List[torch.Tensor], int]:
    """``(fn, inputs, params, floor_bytes)`` for one row: ``fn(a, i)`` is the model's fusion formula on
    ``impl`` (``eager``, ``compile`` or ``yyfast-<backend>``); it has no parameters."""
    from yyfast import ops
    from yyfast.config import FUSIONS, get_config
    from yyfast.ops.composed import yinyang_fuse_reference

    formula = get_config(cfg.model).fusion
    c1, c2, c3 = FUSIONS[formula]
    c, h, w = shape
    a, i = (torch.randn(batch, c, h, w, device=device, dtype=dtype).to(memory_format=torch.channels_last)
            for _ in range(2))
    if impl in ("eager", "compile"):
        def fn(a, i):
            return yinyang_fuse_reference(a, i, c1, c2, c3)
        if impl == "compile":
            fn = torch.compile(fn, mode=cfg.compile_mode, dynamic=False)
    else:
        backend = impl.split("-", 1)[1]

        def fn(a, i):
            return ops.yinyang_fuse(a, i, formula, backend=backend)
    return fn, [a, i], [], floor_bytes(batch, c, h, w, a.element_size(), mode)
