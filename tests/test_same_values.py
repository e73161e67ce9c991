"""yyfast::same_values: the one-call content check behind optimize_for_inference's prepared weights."""
import pytest
import torch

from yyfast.cpu_eval import mbconv_op

pytestmark = pytest.mark.skipif(not mbconv_op.available(), reason="the yyfast extension is not built")


def _pair():
    gen = torch.Generator().manual_seed(0)
    current = [torch.randn(5, 7, 3, 3, generator=gen).contiguous(memory_format=torch.channels_last),
               torch.randn(11, generator=gen), torch.randn(2, 3, generator=gen).double()]
    return current, [t.clone() for t in current]


def test_equal_values_are_the_same_in_any_dense_layout():
    current, snapshot = _pair()
    assert torch.ops.yyfast.same_values(current, snapshot)
    assert torch.ops.yyfast.same_values([], [])


@pytest.mark.parametrize("index,flat", [(0, 0), (0, 314), (1, 10), (2, 5)])
def test_one_changed_element_anywhere_is_seen(index, flat):
    current, snapshot = _pair()
    t = current[index]
    with torch.no_grad():  # the element at this offset of the tensor's memory (channels_last included)
        t.as_strided((t.numel(),), (1,))[flat] += 1e-3
    assert not torch.ops.yyfast.same_values(current, snapshot)


def test_other_shapes_layouts_dtypes_and_lengths_count_as_changed():
    current, snapshot = _pair()
    ops = torch.ops.yyfast.same_values
    assert not ops(current[:2], snapshot)
    assert not ops([current[0].contiguous()] + current[1:], snapshot)          # same values, other strides
    assert not ops([current[0], current[1].double(), current[2]], snapshot)    # other dtype
    assert not ops([current[0], current[1][:10], current[2]], [snapshot[0], snapshot[1][:10].clone(),
                                                               snapshot[2][:1]])  # other shape
    assert not ops([current[0], current[1][::2], current[2]], [snapshot[0], snapshot[1][::2], snapshot[2]])


@pytest.mark.parametrize("threads", [1, 2])
def test_a_change_at_any_byte_of_many_tensors_is_seen(threads):
    """The compare is split by 64 KiB chunks across tensors: sizes that straddle chunks, empty tensors,
    and one flipped element at a random place, many times over."""
    gen = torch.Generator().manual_seed(threads)
    sizes = [0, 16385, 1, 40000, 0, 3, 70001, 16384, 5, 33000]
    current = [torch.randn(n, generator=gen) for n in sizes]
    snapshot = [t.clone() for t in current]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert torch.ops.yyfast.same_values(current, snapshot)
        for _ in range(60):
            k = int(torch.randint(len(sizes), (1,), generator=gen))
            if sizes[k] == 0:
                continue
            pos = int(torch.randint(sizes[k], (1,), generator=gen))
            old = current[k][pos].item()
            current[k][pos] = old + 1.0
            assert not torch.ops.yyfast.same_values(current, snapshot), (k, pos)
            current[k][pos] = old
            assert torch.ops.yyfast.same_values(current, snapshot)
    finally:
        torch.set_num_threads(before)
