"""The one table of activations and squeeze-excitation gates: names, torch functions, modules, kernel codes.

Every layer reads it, so adding an activation is one line here (plus its kernel math):

* ``yyfast.config`` validates ``act``/``se_gate`` against ``ACTIVATIONS``/``SE_GATES``;
* the reference network (``yyfast.reference_model``) builds its modules with ``act_module``/``gate_module``;
* the composed ops, the Triton launch code and the folded inference blocks call ``act(name)`` and
  ``gate(name)``, which both *return* the function (``act(name, inplace=True)``: the in-place form);
* the kernels get the integer codes ``ACT_CODES``/``GATE_CODES``. They are the C++ enums ``ActKind``/
  ``GateKind`` of ``csrc/common/dw_bn_act_se_math.h`` (the C++ op maps its string arguments to them),
  so the Triton and C++ kernels branch on the same numbers; ``tests/test_activations.py`` reads the
  header and compares.

It imports only torch: with ``yyfast.config`` it is the bottom layer (``tests/test_layering.py``).
"""
from __future__ import annotations

import functools
from typing import Callable, Dict, NamedTuple, Optional, Type

import torch
import torch.nn.functional as F
from torch import nn

TensorFn = Callable[[torch.Tensor], torch.Tensor]


def _gelu_grad(h: torch.Tensor) -> torch.Tensor:
    cdf = 0.5 * (1.0 + torch.erf(h * 0.7071067811865476))
    return cdf + h * torch.exp(-0.5 * h * h) * 0.3989422804014327


def _silu_grad(h: torch.Tensor) -> torch.Tensor:
    sg = torch.sigmoid(h)
    return sg * (1.0 + h * (1.0 - sg))


def _sigmoid_grad(h: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(h)
    return s * (1.0 - s)


def _hardsigmoid_grad(h: torch.Tensor) -> torch.Tensor:
    # torch.nn.functional.hardsigmoid's derivative: 1/6 strictly inside (-3, 3), else 0.
    return torch.where((h > -3.0) & (h < 3.0), torch.full_like(h, 1.0 / 6.0), torch.zeros_like(h))


class _Entry(NamedTuple):
    code: int                    # the kernels' integer code (the C++ enum value)
    fn: TensorFn
    inplace: Optional[TensorFn]  # the in-place form (activations only: the gates act on tiny tensors)
    module: Type[nn.Module]
    grad: TensorFn               # the derivative f'(h), for hand-written backwards (the Triton launch code)


_ACTS: Dict[str, _Entry] = {
    # The erf form of GELU, as the paper's (nn.GELU's default, not the tanh approximation).
    "gelu": _Entry(0, F.gelu, torch.ops.aten.gelu_, nn.GELU, _gelu_grad),
    "silu": _Entry(1, F.silu, functools.partial(F.silu, inplace=True), nn.SiLU, _silu_grad),
}
_GATES: Dict[str, _Entry] = {
    "sigmoid": _Entry(0, torch.sigmoid, None, nn.Sigmoid, _sigmoid_grad),
    "hardsigmoid": _Entry(1, F.hardsigmoid, None, nn.Hardsigmoid, _hardsigmoid_grad),
}

ACTIVATIONS = tuple(_ACTS)
SE_GATES = tuple(_GATES)
ACT_CODES: Dict[str, int] = {name: e.code for name, e in _ACTS.items()}
GATE_CODES: Dict[str, int] = {name: e.code for name, e in _GATES.items()}


def _entry(table: Dict[str, _Entry], argument: str, name: str) -> _Entry:
    if not isinstance(name, str) or name not in table:
        raise ValueError(f"{argument}={name!r} is not valid; allowed values: {', '.join(map(repr, table))}")
    return table[name]


def act(name: str, inplace: bool = False) -> TensorFn:
    """The activation ``name`` as a function of a tensor; ``inplace=True``: the form that overwrites its input."""
    entry = _entry(_ACTS, "act", name)
    return entry.inplace if inplace else entry.fn


def gate(name: str) -> TensorFn:
    """The squeeze-excitation gate ``name`` as a function of a tensor."""
    return _entry(_GATES, "gate", name).fn


def act_grad(name: str) -> TensorFn:
    """The derivative of activation ``name``, as a function of its input."""
    return _entry(_ACTS, "act", name).grad


def gate_grad(name: str) -> TensorFn:
    """The derivative of gate ``name``, as a function of its input."""
    return _entry(_GATES, "gate", name).grad


def act_module(name: str) -> nn.Module:
    """A new ``nn.Module`` computing activation ``name`` (the reference network's modules)."""
    return _entry(_ACTS, "act", name).module()


def gate_module(name: str) -> nn.Module:
    """A new ``nn.Module`` computing gate ``name``."""
    return _entry(_GATES, "gate", name).module()
