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


class _Entry(NamedTuple):
    code: int                    # the kernels' integer code (the C++ enum value)
    fn: TensorFn
    inplace: Optional[TensorFn]  # the in-place form (activations only: the gates act on tiny tensors)
    module: Type[nn.Module]


_ACTS: Dict[str, _Entry] = {
    # The erf form of GELU, as the paper's (nn.GELU's default, not the tanh approximation).
    "gelu": _Entry(0, F.gelu, torch.ops.aten.gelu_, nn.GELU),
    "silu": _Entry(1, F.silu, functools.partial(F.silu, inplace=True), nn.SiLU),
}
_GATES: Dict[str, _Entry] = {
    "sigmoid": _Entry(0, torch.sigmoid, None, nn.Sigmoid),
    "hardsigmoid": _Entry(1, F.hardsigmoid, None, nn.Hardsigmoid),
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


def act_module(name: str) -> nn.Module:
    """A new ``nn.Module`` computing activation ``name`` (the reference network's modules)."""
    return _entry(_ACTS, "act", name).module()


def gate_module(name: str) -> nn.Module:
    """A new ``nn.Module`` computing gate ``name``."""
    return _entry(_GATES, "gate", name).module()
