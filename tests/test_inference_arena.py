"""The CPU memory arena of optimize_for_inference's forward (yyfast/cpu_eval/arena.py): the same
results, no system allocations once warm, the allocator always put back, safe across threads."""
import threading

import pytest
import torch

from helpers import rel_err
from inference_helpers import float64_reference, trained_like_
from yyfast.cpu_eval import arena
from yyfast.inference import optimize_for_inference
from yyfast.reference_model import ReferenceYYNet
import yyfast
from yyfast import cpu_fusion

needs_arena = pytest.mark.skipif(not arena.available(), reason="the yyfast extension (arena ops) is not built")


def _fast_model(seed=0, **options):
    model = trained_like_(ReferenceYYNet(yyfast.get_config("yynet_small_16", **options)), seed).eval()
    return model, optimize_for_inference(model)


@needs_arena
@pytest.mark.parametrize("yin_input", ["mean", "red"])
def test_forward_is_the_same_with_and_without_the_arena(monkeypatch, yin_input):
    model, fast = _fast_model(yin_input=yin_input)
    x = torch.randn(5, 3, 20, 18)
    with_arena = fast(x)
    monkeypatch.setattr(arena, "available", lambda: False)
    without = fast(x)
    assert torch.equal(with_arena, without)
    assert rel_err(with_arena, float64_reference(model, x)) < 1e-5


@needs_arena
def test_a_warm_forward_takes_nothing_from_the_system():
    _, fast = _fast_model()
    x = torch.randn(6, 3, 32, 32)
    fast(x)
    fast(x)
    before = arena.stats()
    out = fast(x)
    after = arena.stats()
    assert after.misses == before.misses, "a warm forward of the same shape allocated from the system"
    assert after.hits > before.hits
    assert torch.isfinite(out).all()


@needs_arena
def test_the_allocator_is_put_back_after_an_error_and_outside_the_scope():
    with pytest.raises(ValueError, match="x must have shape"):
        _fast_model()[1](torch.randn(2, 4, 8, 8))
    assert torch.ops.yyfast.arena_depth() == 0
    with pytest.raises(RuntimeError, match="boom"):
        with arena.scope() as used:
            assert used and torch.ops.yyfast.arena_depth() == 1
            raise RuntimeError("boom")
    assert torch.ops.yyfast.arena_depth() == 0
    before = arena.stats()
    big = torch.empty(3_000_003, dtype=torch.uint8)  # outside a scope: the default allocator
    del big
    assert arena.stats() == before


@needs_arena
def test_blocks_freed_after_the_scope_return_to_the_arena_and_release_frees_them():
    with arena.scope():
        kept = torch.empty(1_234_567, dtype=torch.uint8)
    cached = arena.stats().cached_bytes
    del kept  # freed outside the scope: back to the arena, not to the system
    assert arena.stats().cached_bytes == cached + 1_234_567
    assert arena.release() >= 1_234_567
    assert arena.stats().cached_bytes == 0


@needs_arena
def test_nested_scopes_restore_only_at_the_last_exit():
    with arena.scope():
        with arena.scope():
            assert torch.ops.yyfast.arena_depth() == 2
        assert torch.ops.yyfast.arena_depth() == 1
    assert torch.ops.yyfast.arena_depth() == 0


@needs_arena
def test_exit_without_enter_is_a_clear_error():
    with pytest.raises(RuntimeError, match="arena_exit called without a matching arena_enter"):
        torch.ops.yyfast.arena_exit()


@needs_arena
def test_concurrent_forwards_from_two_threads_agree_with_serial_ones():
    _, fast = _fast_model()
    inputs = [torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(n)) for n in (3, 4)]
    expected = [fast(x) for x in inputs]
    results, errors = {}, []

    def work(i):
        try:
            for _ in range(5):
                results[i] = fast(inputs[i])
        except Exception as exc:  # reported below: an assertion in a thread would be lost
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(torch.equal(results[i], expected[i]) for i in range(2))
    assert torch.ops.yyfast.arena_depth() == 0


def test_one_channel_input_gets_channels_last_strides():
    """mean(dim=1) returns NCHW strides for the one-channel Yin input; oneDNN then wrote the Yin stem's
    shortcut in NCHW (slow). The fast graph restrides it; the values are the same tensor's."""
    x = torch.randn(3, 3, 7, 5).contiguous(memory_format=torch.channels_last)
    yin = x.mean(dim=1, keepdim=True)
    fixed = cpu_fusion.one_channel_last(yin)
    assert fixed.stride() == (35, 1, 5, 1)
    assert torch.equal(fixed, yin)
    red = cpu_fusion.one_channel_last(x[:, :1])
    assert red.stride() == (35, 1, 5, 1) and torch.equal(red, x[:, :1])


@needs_arena
def test_yynet_eval_without_autograd_uses_the_arena_and_training_does_not():
    """issue 17 item 3: yyfast.YYNet's CPU eval forward shares the machinery (the arena here)."""
    model = yyfast.create_model("yynet_small_16", backend="auto").eval()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        model(x)
        model(x)
        before = arena.stats()
        model(x)
    after = arena.stats()
    assert after.misses == before.misses and after.hits > before.hits
    model.train()
    before = arena.stats()
    model(x).sum().backward()
    assert arena.stats().hits == before.hits, "a training forward allocated from the arena"
