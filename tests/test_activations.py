"""The one activation/gate table (``yyfast.activations``): its kernel codes are the C++ kernels' enums,
its functions, in-place forms and modules agree, and a bad name is refused with the allowed ones."""
import re
from pathlib import Path

import pytest
import torch

from yyfast import activations, cpu_fusion

MATH_HEADER = Path(__file__).resolve().parent.parent / "csrc" / "common" / "dw_bn_act_se_math.h"


def _cpp_enum(name: str) -> dict:
    """``enum NAME : int { kGelu = 0, ... }`` of the C++ header as {"gelu": 0, ...}."""
    match = re.search(r"enum\s+" + name + r"\s*:\s*int\s*\{([^}]*)\}", MATH_HEADER.read_text())
    assert match, f"enum {name} not found in {MATH_HEADER}"
    pairs = (item.split("=") for item in match.group(1).split(","))
    return {key.strip()[1:].lower(): int(value) for key, value in pairs}


def test_kernel_codes_are_the_cpp_enums():
    assert activations.ACT_CODES == _cpp_enum("ActKind")
    assert activations.GATE_CODES == _cpp_enum("GateKind")


@pytest.mark.parametrize("name", activations.ACTIVATIONS)
def test_act_function_inplace_form_and_module_agree(name):
    x = torch.randn(4, 7, dtype=torch.float64) * 4
    expected = activations.act(name)(x)
    torch.testing.assert_close(activations.act_module(name)(x), expected, rtol=0, atol=0)
    y = x.clone()
    out = activations.act(name, inplace=True)(y)
    torch.testing.assert_close(y, expected, rtol=0, atol=0)  # written into its input
    assert out.data_ptr() == y.data_ptr()


@pytest.mark.parametrize("name", activations.SE_GATES)
def test_gate_function_and_module_agree(name):
    x = torch.randn(4, 7, dtype=torch.float64) * 4
    torch.testing.assert_close(activations.gate_module(name)(x), activations.gate(name)(x), rtol=0, atol=0)


@pytest.mark.parametrize("kind, name", [("act", n) for n in activations.ACTIVATIONS]
                         + [("gate", n) for n in activations.SE_GATES])
def test_derivative_is_autograds(kind, name):
    """The hand-written derivatives (the Triton backward's) equal autograd's, away from hardsigmoid's kinks."""
    fn = getattr(activations, kind)(name)
    grad = getattr(activations, kind + "_grad")(name)
    x = torch.randn(64, dtype=torch.float64) * 4
    x = x.masked_fill((x.abs() - 3).abs() < 1e-3, 0.5).requires_grad_()
    (expected,) = torch.autograd.grad(fn(x).sum(), x)
    # rtol 1e-7: ATen's hardsigmoid backward uses a float32 1/6 even for float64 (3e-8 off); the
    # others agree to 1e-15.
    torch.testing.assert_close(grad(x.detach()), expected, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("lookup, argument, allowed", [
    (activations.act, "act", activations.ACTIVATIONS), (activations.act_module, "act", activations.ACTIVATIONS),
    (activations.gate, "gate", activations.SE_GATES), (activations.gate_module, "gate", activations.SE_GATES)])
@pytest.mark.parametrize("bad", ["relu", None, ["gelu"]])
def test_a_bad_name_is_refused_with_the_allowed_ones(lookup, argument, allowed, bad):
    with pytest.raises(ValueError, match=re.escape(f"{argument}={bad!r} is not valid; allowed values: ")) as info:
        lookup(bad)
    assert all(repr(name) in str(info.value) for name in allowed)


def test_onednn_post_ops_cover_every_activation():
    """The CPU fast path has a oneDNN post-op for each activation of the table (else a KeyError there)."""
    assert set(cpu_fusion._ATTRS) == set(activations.ACTIVATIONS)
