"""The C++/CUDA backend: the ``yyfast._C`` ops, with the shared fakes and autograd.

The ops ``yyfast::dw_bn_act_se_cuda``/``..._backward`` and ``yyfast::yinyang_fuse_cuda``/``..._backward``
are defined in ``csrc/ops.cpp`` (``TORCH_LIBRARY(yyfast, ...)``) with the schemas of ``schemas.py``;
the CUDA kernels (csrc/cuda) and their C++ CPU twins (csrc/cpu) implement them. Their fakes and
autograd are the shared ones of ``registration.py``. Importing this module loads the extension; it
raises ImportError if ``yyfast._C`` is missing.

``dw_bn_act_se`` and ``yinyang_fuse`` below are the backend contract of ``yyfast.ops`` (its docstring).
"""
from __future__ import annotations

from .. import _C  # noqa: F401  (loading the library registers the ops)
from .registration import register_dw_bn_act_se, register_yinyang_fuse

__all__ = ["dw_bn_act_se", "yinyang_fuse"]

dw_bn_act_se = register_dw_bn_act_se("cuda")
yinyang_fuse = register_yinyang_fuse("cuda")
