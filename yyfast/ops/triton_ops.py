"""The Triton backend: the kernels in ``yyfast.kernels`` registered as PyTorch custom ops.

Ops (namespace ``yyfast``, schemas in ``schemas.py``, the same contract as the ``yyfast._C`` ops):
``dw_bn_act_se_triton`` -> ``(y, mean, var, pooled)`` and ``dw_bn_act_se_triton_backward``;
``yinyang_fuse_triton`` -> ``out`` and ``yinyang_fuse_triton_backward``. Their fakes and autograd
are the shared ones of ``registration.py``, so they run under ``torch.compile(fullgraph=True)`` and
pass ``torch.library.opcheck``.

``torch.library.custom_op`` is used rather than ``triton_op``: under TRITON_INTERPRET the latter's
fake-tensor test fails (the interpreter touches the fake tensors' data), see docs/kernels.md.

``dw_bn_act_se`` and ``yinyang_fuse`` below are the backend contract of ``yyfast.ops`` (its
docstring). Importing this module raises ImportError only when Triton itself is missing.
"""
from __future__ import annotations

import torch

import triton  # noqa: F401  (an ImportError here means: no Triton, no Triton backend)

from yyfast.kernels import dw_bn_act_se as _span
from yyfast.kernels import yinyang_fuse as _fuse
from .registration import register_dw_bn_act_se, register_yinyang_fuse
from .schemas import SCHEMAS, op_names

__all__ = ["dw_bn_act_se", "yinyang_fuse"]


def _define(op: str, forward, backward) -> None:
    """``yyfast::<op>_triton`` and its backward op from the launch functions, with the shared schemas."""
    for name, schema, fn in zip(op_names(op, "triton"), SCHEMAS[op], (forward, backward)):
        torch.library.custom_op(f"yyfast::{name}", fn, mutates_args=(), schema=schema)


_define("dw_bn_act_se", _span.forward, _span.backward)
_define("yinyang_fuse", _fuse.forward, _fuse.backward)

dw_bn_act_se = register_dw_bn_act_se("triton")
yinyang_fuse = register_yinyang_fuse("triton")
