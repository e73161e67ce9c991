"""The one contract of each fused op: its schema text, the same for every backend.

Each op has a forward and a backward, registered once per backend as ``yyfast::<op>_<backend>`` and
``yyfast::<op>_<backend>_backward`` (``op_names``). The Triton ops are defined from the strings below
(``triton_ops.py``); the ``yyfast._C`` ops (CUDA kernels and their C++ CPU twins) are defined in
``csrc/ops.cpp``, which must hold the same text: ``tests/test_op_schemas.py`` compares the
registered schemas with these. The fakes and autograd formulas of every backend are in
``registration.py``.

``dw_bn_act_se`` returns ``(y, mean, var, pooled)``: y in x's dtype and memory format; mean and var
the per-channel batch mean and biased variance in training (the running statistics, copied, in
eval); pooled the (N, C) SE input ``mean_hw(act(BN(z)))``, saved so the backward recomputes the tiny
SE MLP instead of storing its activations; the three float32 (float64 for a float64 x). The backward
takes the saved x, mean, var, pooled and gives the gradients of y for x and every parameter.
"""
from __future__ import annotations

from typing import Dict, Tuple

BACKENDS = ("cuda", "triton")

_SPAN_PARAMS = "int stride, float eps, bool training, str act, str gate"

DW_BN_ACT_SE = (
    "(Tensor x, Tensor dw_weight, Tensor bn_weight, Tensor bn_bias, Tensor running_mean, Tensor running_var, "
    f"Tensor se_w1, Tensor se_b1, Tensor se_w2, Tensor se_b2, {_SPAN_PARAMS}) "
    "-> (Tensor y, Tensor mean, Tensor var, Tensor pooled)")

DW_BN_ACT_SE_BACKWARD = (
    "(Tensor grad_y, Tensor x, Tensor dw_weight, Tensor bn_weight, Tensor bn_bias, Tensor mean, Tensor var, "
    f"Tensor pooled, Tensor se_w1, Tensor se_b1, Tensor se_w2, Tensor se_b2, {_SPAN_PARAMS}) "
    "-> (Tensor grad_x, Tensor grad_dw_weight, Tensor grad_bn_weight, Tensor grad_bn_bias, Tensor grad_se_w1, "
    "Tensor grad_se_b1, Tensor grad_se_w2, Tensor grad_se_b2)")

YINYANG_FUSE = "(Tensor a, Tensor i, float c1, float c2, float c3) -> Tensor"

YINYANG_FUSE_BACKWARD = "(Tensor grad, Tensor a, Tensor i, float c1, float c2, float c3) -> (Tensor, Tensor)"

#: op -> (forward schema, backward schema), without the op names.
SCHEMAS: Dict[str, Tuple[str, str]] = {
    "dw_bn_act_se": (DW_BN_ACT_SE, DW_BN_ACT_SE_BACKWARD),
    "yinyang_fuse": (YINYANG_FUSE, YINYANG_FUSE_BACKWARD),
}


def op_names(op: str, backend: str) -> Tuple[str, str]:
    """The registered names of ``op``'s forward and backward on ``backend``, without the namespace:
    ``("dw_bn_act_se_cuda", "dw_bn_act_se_cuda_backward")``."""
    if op not in SCHEMAS:
        raise ValueError(f"op={op!r} is not valid; allowed values: {', '.join(map(repr, SCHEMAS))}")
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not valid; allowed values: {', '.join(map(repr, BACKENDS))}")
    return f"{op}_{backend}", f"{op}_{backend}_backward"
