"""InferenceYYNet's forward through ``yyfast._C.fast_forward`` (csrc/fast_forward.cpp): the one-call forward
with the Python route's checks made in C. It must run where the route would end in the one call, give the
same logits bit for bit, and hand back to the route (None) after anything that changes the answer: a
weight written any way, a module or parameter replaced, a hook, the graph or backend, another input."""
import copy
import io
import random

import pytest
import torch
from torch import nn

from inference_helpers import trained_like_
from yyfast.cpu_eval import stem_conv, winograd
from yyfast.inference import block_plan, optimize_for_inference, whole_forward
from yyfast.reference_model import ReferenceYYNet
import yyfast

pytestmark = pytest.mark.skipif(not (whole_forward.available() and hasattr(whole_forward.extension(), "fast_forward")),
                                reason="the yyfast extension (yynet_eval, fast_forward) is not built")


def _fast(seed=0, name="yynet_small_16", **options):
    model = trained_like_(ReferenceYYNet(yyfast.get_config(name, **options)), seed).eval()
    return optimize_for_inference(model)


def _ran_fast(fast, x) -> bool:
    """Whether ``fast(x)`` took the C path: ``fast_forward`` returned logits (the route would have called
    ``yyfast::same_values`` and entered the arena from Python)."""
    ext, calls = whole_forward.extension(), []
    real = ext.fast_forward

    def spy(*args):
        out = real(*args)
        calls.append(out is not None)
        return out

    ext.fast_forward = spy
    try:
        fast(x)
    finally:
        ext.fast_forward = real
    return calls == [True]


def _fresh(fast, x) -> torch.Tensor:
    """``fast(x)`` from nothing cached: every prepared weight and record dropped and made again."""
    twin = copy.deepcopy(fast)
    for key in ("_bound_blocks", "_fast_forward"):
        twin.__dict__.pop(key, None)
    for m in twin.modules():
        block_plan.forget(m)
        winograd.forget(m)
        stem_conv.forget(m)
    return twin(x)


def test_runs_and_equals_the_python_route():
    fast = _fast()
    x = torch.randn(1, 3, 20, 20)
    first = fast(x)  # binds (Python route) and records
    assert _ran_fast(fast, x)
    record = fast.__dict__.pop("_fast_forward")
    try:
        routed = fast(x)
    finally:
        fast.__dict__["_fast_forward"] = record
    assert torch.equal(fast(x), routed) and torch.equal(first, routed)


def test_no_grad_even_for_an_input_that_requires_grad():
    fast = _fast()
    x = torch.randn(2, 3, 16, 16)
    fast(x)
    xg = x.clone().requires_grad_(True)
    assert _ran_fast(fast, xg)
    out = fast(xg)
    assert not out.requires_grad and out.grad_fn is None


@pytest.mark.parametrize("x,why", [
    (torch.randn(1, 3, 16, 16, dtype=torch.float64), "float64 (the route casts it)"),
    (nn.Parameter(torch.randn(1, 3, 16, 16)), "a Tensor subclass"),
])
def test_other_inputs_take_the_route(x, why):
    fast = _fast()
    fast(torch.randn(1, 3, 16, 16))
    assert not _ran_fast(fast, x), why
    assert torch.equal(fast(x), fast(x.detach().float()))


def test_bad_inputs_still_raise_the_routes_errors():
    fast = _fast()
    fast(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3, H, W\), got \(1, 4, 16, 16\)"):
        fast(torch.randn(1, 4, 16, 16))
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3, H, W\), got \(3, 16, 16\)"):
        fast(torch.randn(3, 16, 16))
    with pytest.raises(RuntimeError, match="x must have no empty dimension"):
        fast(torch.randn(1, 3, 0, 16))


def test_a_copy_and_a_pickle_work_after_a_forward():
    fast = _fast()
    x = torch.randn(1, 3, 16, 16)
    expected = fast(x)
    fast(x)
    twin = copy.deepcopy(fast)
    assert twin.__dict__.get("_fast_forward") is None
    assert torch.equal(twin(x), expected) and _ran_fast(twin, x)
    buffer = io.BytesIO()
    torch.save(fast, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert torch.equal(loaded(x), expected)


def _edits(fast):
    """Every edit a user might make to a folded model, each a function of a random generator (what it did
    is returned for the failure message)."""
    convs = [m for m in fast.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    params = [p for p in fast.parameters()]

    def data_write(rng):
        p = rng.choice(params)
        p.data[tuple(rng.randrange(n) for n in p.shape)] += 0.25  # one element, any memory format
        return "a .data write"

    def in_place(rng):
        with torch.no_grad():
            rng.choice(params).mul_(1.5)
        return "an in-place write"

    def set_data(rng):
        p = rng.choice(params)
        p.data = p.data.clone() * 0.5
        return "p.data = another tensor"

    def new_parameter(rng):
        m = rng.choice(convs)
        m.weight = nn.Parameter(m.weight.detach() * -1.0)
        return "a replaced Parameter"

    def new_module(rng):
        k = rng.randrange(len(fast.yin))
        fast.yin[k] = copy.deepcopy(fast.yin[k])
        with torch.no_grad():
            next(fast.yin[k].parameters()).add_(0.1)
        return "a replaced block"

    def hook(rng):
        m = rng.choice([fast.fc, fast.classifier, *fast.yang, *fast.yin, *fast.single_path, *convs])
        handle = m.register_forward_hook(lambda mod, i, o: o + 0.125)  # a hook that changes the output
        return "a forward hook", handle

    def pre_hook(rng):
        m = rng.choice([fast.fc, *fast.yin, *fast.single_path])
        handle = m.register_forward_pre_hook(lambda mod, i: (i[0] * 1.5, *i[1:]))
        return "a forward pre-hook", handle

    def global_hook(rng):
        handle = nn.modules.module.register_module_forward_hook(
            lambda mod, i, o: o * 0.75 if isinstance(o, torch.Tensor) else o)
        return "a global forward hook", handle

    def graph(rng):
        fast.graph = rng.choice(["plain", "fast"])
        return f"graph={fast.graph}"

    def backend(rng):
        fast.backend = rng.choice(["reference", "auto"])
        return f"backend={fast.backend}"

    def load_state(rng):
        state = {k: v * 1.01 if v.is_floating_point() else v for k, v in fast.state_dict().items()}
        fast.load_state_dict(state)
        return "load_state_dict"

    def nothing(rng):
        return "nothing"

    return [data_write, in_place, set_data, new_parameter, new_module, hook, pre_hook, global_hook, graph,
            backend, load_state, nothing]


@pytest.mark.parametrize("seed", range(4))
def test_any_sequence_of_edits_then_forwards_equals_a_fresh_model(seed):
    """Randomized: after any mix of edits (and hooks added and removed), the forward equals the same model
    with nothing cached, and the C path runs again once nothing that needs the route is left."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    fast = _fast(seed)
    x = torch.randn(1, 3, 16, 16)
    fast(x)
    handles, done = [], []
    try:
        for _ in range(10):
            what = rng.choice(_edits(fast))(rng)
            if isinstance(what, tuple):
                what, handle = what
                handles.append(handle)
            done.append(what)
            if handles and rng.random() < 0.4:
                handles.pop(rng.randrange(len(handles))).remove()
            out = fast(x)
            expected = _fresh(fast, x)
            assert torch.equal(out, expected), done
        for handle in handles:
            handle.remove()
        handles = []
        fast.graph, fast.backend = "fast", "auto"
        expected = _fresh(fast, x)
        assert torch.equal(fast(x), expected), done
        assert _ran_fast(fast, x), done
    finally:
        for handle in handles:
            handle.remove()


def test_a_module_only_the_route_sees_changes_nothing():
    """A hook on an inner module (a block's convolution: neither route calls it) makes the C path hand
    back, and the route gives the same logits."""
    fast = _fast()
    x = torch.randn(1, 3, 16, 16)
    expected = fast(x)
    handle = fast.yin[1].expand.register_forward_hook(lambda m, i, o: None)
    try:
        assert not _ran_fast(fast, x)
        assert torch.equal(fast(x), expected)
    finally:
        handle.remove()
    assert _ran_fast(fast, x)


def test_only_the_parameters_read_through_a_copy_are_compared():
    """The MBConv blocks' weights and the head reach the op as views of the parameters (mbconv_op.pack), so
    the record compares only the others by value (Winograd's transformed convolutions, the stems' packing,
    summed biases): for yynet_small_64 0.6 of 2.9 MB. The randomized edit test above holds it to the
    fresh model, including ``p.data = t`` on a viewed parameter (which moves it)."""
    fast = _fast(name="yynet_small_64")
    fast(torch.randn(1, 3, 32, 32))
    record = fast.__dict__["_fast_forward"]
    params = list(fast.parameters())
    assert 0 < record.compared <= 12 < len(params)
