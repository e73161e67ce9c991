"""Convolution + activation (and convolution + add) in one oneDNN call, for float32 CPU tensors.

PyTorch's eager CPU convolution writes its output, then GELU reads and writes it again. oneDNN
can apply the activation as a post-op while the output is still in cache; measured here (2-core
AVX2 EPYC, yynet_small_64 shapes) the 1x1 expansion + GELU is ~30% faster and the depthwise
3x3 + GELU ~15% faster. The entry points are ``torch.ops.mkldnn._convolution_pointwise``
(what Inductor's CPU backend itself emits). They are internal, so they are used only after a
one-time self-test on this machine passes; anything else (GPU, bf16/fp16, a torch without
them, tracing for export) takes the plain ``act(conv(x))`` path.

It sits below ``yyfast.model`` (whose eval-mode blocks use it) and ``yyfast.inference`` (whose folded
blocks do), and needs only torch and ``yyfast.activations``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import activations

#: oneDNN post-op name and algorithm for each activation (GELU: the exact erf form).
_ATTRS = {"gelu": ("gelu", "none"), "silu": ("swish", None)}
_STATE = {"checked": False, "ok": False, "reason": None}


def _conv_args(conv: nn.Conv2d):
    return list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups


def _self_test() -> Optional[str]:
    """None if the fused ops exist and agree with the unfused ones here, else why not."""
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(2, 6, 5, 7, generator=gen).contiguous(memory_format=torch.channels_last)
        for act, groups in (("gelu", 1), ("silu", 6)):
            conv = nn.Conv2d(6, 6, 3, 2, 1, groups=groups).to(memory_format=torch.channels_last)
            with torch.no_grad():
                ref = activations.act(act)(conv(x))
                out = conv_act_onednn(conv, x, act)
                ref_add = conv(x) + ref
                out_add = conv_add_onednn(conv, x, ref)
                out_plain = conv_onednn(conv, x)
            for a, b in ((out, ref), (out_add, ref_add), (out_plain, conv(x))):
                if a.shape != b.shape or not torch.allclose(a, b, rtol=1e-5, atol=1e-6):
                    return "oneDNN's fused convolution disagrees with the unfused one on this machine"
    except Exception as exc:  # missing op, no oneDNN, unsupported CPU
        return f"{type(exc).__name__}: {exc}"
    return None


def available() -> bool:
    """Whether the fused CPU convolutions passed their self-test (run once per process)."""
    if not _STATE["checked"]:
        _STATE["checked"] = True
        # The test's Conv2d initialises from the global RNG: without fork_rng, whichever forward
        # ran the test first shifted the training run's random stream, so a resumed run (which
        # tests at another point) was not bit-identical to an unbroken one.
        with torch.random.fork_rng(devices=[]):
            reason = _self_test() if torch.backends.mkldnn.is_available() else "torch has no oneDNN (mkldnn)"
        _STATE["ok"], _STATE["reason"] = reason is None, reason
    return bool(_STATE["ok"])


def usable(x: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling() and available())


def one_channel_last(t: torch.Tensor) -> torch.Tensor:
    """A contiguous (N, 1, H, W) tensor with channels_last strides (H*W, 1, W, 1), the same values.

    A one-channel tensor is both layouts at once, and ``mean(dim=1)`` returns it with NCHW strides;
    oneDNN then writes the Yin stem's 1x1 shortcut in NCHW, and its 3x3 conv + add ran 8.3 ms instead of
    6.1 at batch 16 (the whole Yin Residual 9.5 -> 6.8 ms with these strides; 2-core EPYC, 2026-11-27)."""
    t = t.contiguous()
    n, _, height, width = t.shape
    return t.as_strided(t.shape, (height * width, 1, width, 1))


def _weights(conv: nn.Conv2d, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor]):
    """conv's own weight and bias, or the given ones (folded weights computed elsewhere)."""
    return (conv.weight, conv.bias) if weight is None else (weight, bias)


# The three oneDNN calls unchecked: for callers that checked ``usable(x)`` once for a whole forward.
def conv_act_onednn(conv: nn.Conv2d, x: torch.Tensor, act: str, weight=None, bias=None) -> torch.Tensor:
    attr, algorithm = _ATTRS[act]
    return torch.ops.mkldnn._convolution_pointwise(x, *_weights(conv, weight, bias), *_conv_args(conv), attr, [],
                                                   algorithm)


def conv_onednn(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._convolution_pointwise(x, conv.weight, conv.bias, *_conv_args(conv), "none", [], "")


def conv_add_onednn(conv: nn.Conv2d, x: torch.Tensor, other: torch.Tensor, weight=None, bias=None) -> torch.Tensor:
    return torch.ops.mkldnn._convolution_pointwise.binary(x, other, *_weights(conv, weight, bias), *_conv_args(conv),
                                                          "add", None, None, [], None)


def _plain_conv(conv: nn.Conv2d, x: torch.Tensor, weight, bias) -> torch.Tensor:
    if weight is None:
        return conv(x)
    padding, stride, dilation, groups = _conv_args(conv)
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


def conv_act(conv: nn.Conv2d, x: torch.Tensor, act: str, weight: Optional[torch.Tensor] = None,
             bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``act(conv(x))``; one oneDNN call where usable, else ``conv(x)`` then the in-place activation.
    ``weight``/``bias``, if given, replace the conv's own (its geometry is still used)."""
    if usable(x):
        return conv_act_onednn(conv, x, act, weight, bias)
    return activations.act(act, inplace=True)(_plain_conv(conv, x, weight, bias))


def run_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``, through oneDNN where usable. For the 1x1 shortcut convolutions at batch < 16 eager
    PyTorch takes its own path instead (``_slow_conv2d_forward``: a bias copy into the output, then a
    GEMM); the shortcuts of the stride-2 blocks and the stems go this way instead."""
    if usable(x):
        return conv_onednn(conv, x)
    return conv(x)


def conv_add(conv: nn.Conv2d, x: torch.Tensor, other: torch.Tensor, weight: Optional[torch.Tensor] = None,
             bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``conv(x) + other`` (``other`` has the output's shape); one oneDNN call where usable."""
    if usable(x) and other.dtype == x.dtype and other.shape[1] == conv.out_channels:
        return conv_add_onednn(conv, x, other, weight, bias)
    return _plain_conv(conv, x, weight, bias).add_(other)
