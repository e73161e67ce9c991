"""``dw_bn_act_se`` (the MBConv span) for bench/kernels.py: its calls and its byte floor.

Byte floor (read every input once, write every output once; ``e`` = activation element size,
parameters and statistics fp32; ``X`` = N*C*H*W, ``Y`` = N*C*Ho*Wo, ``P`` = 9C + 2C (BN affine)
+ 2C (running stats) + 2*C*C/4 + C/4 + C (SE) parameter elements, ``G`` = P - 2C the
differentiable ones):

* ``fwd-eval``:  e*(X + Y) + 4*P
* ``fwd-train``: e*(X + Y) + 4*(P + 2C)           (the running statistics are also written)
* ``fwd+bwd``:   e*(X + Y + Y + X) + 4*(P + 2C + G)  (x, y, grad_y, grad_x; params read, grads written)
"""
from __future__ import annotations

from typing import Callable, List, Tuple

import torch

from yyfast.kernels.output_spec import span_output_size

OP = "dw_bn_act_se"
MODES = ("fwd-eval", "fwd-train", "fwd+bwd")


def shape_name(shape) -> str:
    """``256x32x32/s2`` (C x H x W / stride; the batch apart)."""
    return "x".join(map(str, shape[:3])) + f"/s{shape[3]}"


def floor_bytes(n: int, c: int, h: int, w: int, stride: int, hidden: int, elem: int, mode: str) -> int:
    ho, wo = span_output_size(h, w, stride)
    x, y = n * c * h * w, n * c * ho * wo
    params = 9 * c + 2 * c + 2 * c + hidden * c + hidden + c * hidden + c
    grads = params - 2 * c
    if mode == "fwd-eval":
        return elem * (x + y) + 4 * params
    if mode == "fwd-train":
        return elem * (x + y) + 4 * (params + 2 * c)
    return elem * (2 * x + 2 * y) + 4 * (params + 2 * c + grads)


def _inputs(c: int, h: int, w: int, stride: int, batch: int, dtype: torch.dtype, device: torch.device,
            model_name: str):
    from yyfast.config import get_config
    from yyfast.reference_model import DWBNActSE

    cfg = get_config(model_name)
    mod = DWBNActSE(c, stride, cfg.act, cfg.se_gate, cfg.se_reduction, eps=cfg.bn_eps, momentum=cfg.bn_momentum)
    with torch.no_grad():  # non-trivial running statistics so eval mode is not an identity BN
        mod.bn.running_mean.uniform_(-0.5, 0.5)
        mod.bn.running_var.uniform_(0.5, 2.0)
    mod = mod.to(device)
    x = torch.randn(batch, c, h, w, device=device, dtype=dtype).to(memory_format=torch.channels_last)
    return mod, x


def build(impl: str, cfg, mode: str, shape, batch: int, dtype: torch.dtype, device: torch.device
          ) -> Tuple[Callable, List[torch.Tensor], List[torch.Tensor], int]:
    """``(fn, inputs, params, floor_bytes)`` for one row: ``fn(*inputs)`` is the span on ``impl``
    (``eager``, ``compile`` or ``yyfast-<backend>``), ``params`` its parameters (for ``fwd+bwd``)."""
    from yyfast import ops
    from yyfast.ops.composed import dw_bn_act_se_reference

    c, h, w, stride = shape
    mod, x = _inputs(c, h, w, stride, batch, dtype, device, cfg.model)
    bn, se = mod.bn, mod.se
    training = mode != "fwd-eval"
    params = [mod.conv.weight, bn.weight, bn.bias, se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias]

    if impl in ("eager", "compile"):
        def fn(x):
            return dw_bn_act_se_reference(x, mod.conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var,
                                          se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias, stride=stride,
                                          eps=bn.eps, momentum=bn.momentum, training=training, act=mod.act_name,
                                          gate=mod.gate_name)
        if impl == "compile":
            fn = torch.compile(fn, mode=cfg.compile_mode, dynamic=False)
    else:
        backend = impl.split("-", 1)[1]

        def fn(x):
            return ops.dw_bn_act_se(x, mod.conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var,
                                    se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias, stride=stride,
                                    eps=bn.eps, momentum=bn.momentum, training=training, act=mod.act_name,
                                    gate=mod.gate_name, backend=backend)
    floor = floor_bytes(batch, c, h, w, stride, se.fc1.out_channels, x.element_size(), mode)
    return fn, [x], params, floor
