"""The divergence digest (projections.digest): its exact function, bit-flip detection, devices."""

from __future__ import annotations

import hashlib
import random

import pytest
import torch
from torch import nn

from lifecycle_es.errors import UsageError
from projections._digest_device import _KEPT, _device_sum, _row_sums, _words
from projections._digest_words import ROW, _row_weight
from projections.digest import _host_sum, _item_weight, digest, extend_chain, sm, training_items

MASK = (1 << 64) - 1
DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.int64)


def reference(items: list[tuple[str, object]], events: str | None = None) -> str:
    """The module docstring's function, in exact Python integers over the tensors' bytes."""

    def blake(text: str) -> int:
        return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")

    total = 0
    for t, (name, value) in enumerate(items):
        s = 0
        if isinstance(value, torch.Tensor):
            header = f"{name}\0{value.dtype}\0{tuple(value.shape)}"
            data = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            data += b"\0" * (-len(data) % 8)
            for i in range(len(data) // 8):
                word = int.from_bytes(data[8 * i : 8 * i + 8], "little", signed=True)
                w = (sm(i % ROW) | 1) * (sm((1 << 32) + i // ROW) | 1)
                s += w * word
        else:
            header = f"{name}\0{type(value).__name__}\0{value!r}"
        total += (sm((1 << 48) + t) | 1) * (blake(header) + s)
    if events is not None:
        total += (sm((1 << 48) + len(items)) | 1) * blake(f"events\0{events}")
    return f"{total & MASK:016x}"


def tensors(dtype: torch.dtype, seed: int = 0) -> list[tuple[str, object]]:
    """Tensors of `dtype`: odd byte counts, more than one weight row, a strided view, a plain value."""
    g = torch.Generator().manual_seed(seed)

    def make(*shape: int) -> torch.Tensor:
        if dtype.is_floating_point:
            return torch.randn(*shape, generator=g).to(dtype)
        return torch.randint(-(2**62), 2**62, shape, generator=g, dtype=dtype)

    big = make(3 * ROW + 5)  # three whole rows of words for 2-byte dtypes, more for wider ones
    return [
        ("a.weight", make(3, 5)),
        ("a.weight/exp_avg", make(7)),
        ("b.bias", make(1)),
        ("big", big),
        ("strided", make(6, 4)[:, 1]),
        ("view", big[1:10]),  # a storage offset that is not 8-byte aligned
        ("long view", big[1:]),  # the same, over more than one row of words for 4-byte dtypes
        ("step", 3.0),
    ]


def flip(tensor: torch.Tensor, bit: int) -> None:
    """Flip one bit of a tensor's bytes in place (bit counted over its row-major bytes)."""
    assert tensor.is_contiguous()
    raw = tensor.reshape(-1).view(torch.uint8)  # a view: the flip lands in the tensor
    raw[bit // 8] ^= 1 << (bit % 8)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_the_digest_is_exactly_the_documented_function(dtype: torch.dtype) -> None:
    """The digest equals the docstring's formula over exact integers, events included."""
    items = tensors(dtype)
    chain = extend_chain("", "event-1")
    assert digest(items) == reference(items)
    assert digest(items, events=chain) == reference(items, chain)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_a_single_bit_flip_in_any_tensor_changes_the_digest(dtype: torch.dtype) -> None:
    """Flipping any one of 40 seeded random bits, in any tensor, changes the digest."""
    items = [(n, v.clone() if isinstance(v, torch.Tensor) else v) for n, v in tensors(dtype)[:4]]
    before = digest(items)
    rng = random.Random(17)
    for _ in range(40):
        name, value = rng.choice([(n, v) for n, v in items if isinstance(v, torch.Tensor)])
        assert isinstance(value, torch.Tensor)
        bit = rng.randrange(value.numel() * value.element_size() * 8)
        flip(value, bit)
        assert digest(items) != before, f"flip of bit {bit} of {name} went unseen"
        flip(value, bit)
        assert digest(items) == before


def adam_model(seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A small model after two Adam steps, from a fixed seed."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(4, 6)).pow(2).sum().backward()
        optimizer.step()
    return model, optimizer


def adam_digest(model: nn.Module, optimizer: torch.optim.Optimizer, chain: str) -> str:
    return digest(training_items(sorted(model.named_parameters()), optimizer), events=chain)


def test_a_flip_in_any_adam_state_tensor_or_event_id_changes_the_digest() -> None:
    """Each Adam state tensor (step, exp_avg, exp_avg_sq) and each applied event id is covered."""
    model, optimizer = adam_model(0)
    chain = extend_chain(extend_chain("", "evt-0001"), "evt-0002")
    before = adam_digest(model, optimizer, chain)
    rng = random.Random(5)
    states = [s for p in model.parameters() for s in optimizer.state[p].values()]
    assert len(states) == 3 * len(list(model.parameters()))
    for state in states:
        bit = rng.randrange(state.numel() * state.element_size() * 8)
        flip(state, bit)
        assert adam_digest(model, optimizer, chain) != before
        flip(state, bit)
    for ids in (("evt-0001", "evt-0003"), ("evt-0002", "evt-0001"), ("evt-0001",)):
        other = ""
        for event_id in ids:
            other = extend_chain(other, event_id)
        assert adam_digest(model, optimizer, other) != before
    assert adam_digest(model, optimizer, chain) == before


def test_equal_states_give_equal_digests() -> None:
    """Two models trained alike from one seed digest alike; another seed does not."""
    first, second, third = adam_model(1), adam_model(1), adam_model(2)
    assert adam_digest(*first, "") == adam_digest(*second, "")
    assert adam_digest(*first, "") != adam_digest(*third, "")


def test_names_shapes_dtypes_and_order_matter() -> None:
    """The same bytes under another name, shape, dtype or item order digest differently."""
    x = torch.arange(12, dtype=torch.int32)
    base = digest([("x", x), ("y", x)])
    assert digest([("z", x), ("y", x)]) != base
    assert digest([("x", x.view(3, 4)), ("y", x)]) != base
    assert digest([("x", x.view(torch.float32)), ("y", x)]) != base
    assert digest([("y", x), ("x", x)]) != base
    assert digest([("x", x), ("y", x)], events="") != base


def test_row_boundaries_odd_byte_counts_and_any_dtype_digest_exactly() -> None:
    """Tensors ending just before, at and just after a row of words, or inside a word, of any
    dtype (bool, uint8, complex128), empty, not contiguous or a conjugate view, give the documented
    function, and a flip on either side of a row boundary or in the last padded word changes it."""
    raw = torch.randint(
        0, 256, (ROW * 8 * 2 + 9,), dtype=torch.uint8, generator=torch.Generator().manual_seed(3)
    )
    items: list[tuple[str, object]] = [
        (f"bytes {n}", raw[:n].clone()) for n in (0, 1, 7, ROW * 8 - 1, ROW * 8, ROW * 8 + 1, raw.numel())
    ]
    items += [
        ("bool", raw[:13].clone().view(torch.bool).clone()),
        ("complex", torch.randn(ROW // 2 + 3, dtype=torch.complex128)),
        ("transposed", torch.randn(5, 7).t()),
    ]
    assert digest(items) == reference(items)
    conjugate = torch.randn(4, dtype=torch.complex64).conj()  # a view: its values are resolved
    assert digest([("c", conjugate)]) == digest([("c", conjugate.resolve_conj())])
    before, whole = digest(items), items[-4][1]
    assert isinstance(whole, torch.Tensor)
    for bit in (ROW * 64 - 1, ROW * 64, whole.numel() * 8 - 1):  # either side of a row, the last bit
        flip(whole, bit)
        assert digest(items) != before, f"flip of bit {bit} went unseen"
        flip(whole, bit)


def test_the_device_path_sums_rows_as_the_host_path_does() -> None:
    """The torch row sums used on devices other than the CPU (CUDA) agree with the host's, here
    on the CPU, so the arithmetic of the GPU path is checked on machines without one."""
    for n in (3, ROW * 8, ROW * 8 * 3 + 5):
        tensor = torch.randint(0, 256, (n,), dtype=torch.uint8, generator=torch.Generator().manual_seed(n))
        sums: list[torch.Tensor] = []
        rows = _row_sums(*_words(tensor), sums)
        on_device = sum(int(s) * _row_weight(j) for j, s in enumerate(torch.cat(sums).tolist()))
        assert rows == -(-n // (ROW * 8))
        assert on_device % (MASK + 1) == _host_sum(tensor.numpy()) % (MASK + 1)


@pytest.mark.parametrize("block_rows", [4, 8, 512], ids=lambda b: f"block_rows={b}")
def test_the_device_path_packs_tensors_as_the_host_path_sums_them(block_rows: int) -> None:
    """The device path (packed small tensors, large ones summed in place, in blocks) gives each
    item's weighted sum as the host path does, here on the CPU, so the packing and its weights are
    checked on machines without a GPU. With 4 rows a block, tensors of 2 rows or more are summed
    in place and the packs are flushed often; with 512 every tensor here is packed."""
    g = torch.Generator().manual_seed(3)
    sizes = [1, 7, ROW * 8 - 1, ROW * 8, ROW * 8 + 1, 3, ROW * 8 * 3 + 5, 2 * ROW * 8, 11, ROW * 8 * 9 + 2]
    data = [torch.randint(0, 256, (n,), dtype=torch.uint8, generator=g) for n in sizes]
    big = torch.randn(ROW * 3 + 7, generator=g)
    # the transposed tensor is not contiguous: it keeps this set off the kept packing, whose own
    # test is below, so the packs and the in-place sums are what is checked here
    tensors = [*data, big[1:], big[3 : ROW + 3], torch.randn(5, 6, generator=g).t()]
    entries = [(_item_weight(t), tensor) for t, tensor in enumerate(tensors)]
    host_bytes = [tensor.contiguous().reshape(-1).view(torch.uint8).numpy() for tensor in tensors]
    expected = sum(_item_weight(t) * _host_sum(data) for t, data in enumerate(host_bytes))
    assert _device_sum(entries, block_rows=block_rows) % (MASK + 1) == expected % (MASK + 1)
    flipped = tensors[6].clone()
    flip(flipped, 12_345)
    entries[6] = (entries[6][0], flipped)
    assert _device_sum(entries, block_rows=block_rows) % (MASK + 1) != expected % (MASK + 1)


def test_a_kept_packing_follows_tensors_updated_in_place_and_notices_other_ones() -> None:
    """A small model's packing is kept between calls (here on the CPU, as on a GPU): a bit flipped
    in place is seen through it, and a tensor replaced by another of the same shape, or a weight
    changed, makes a new packing rather than reading the old one."""
    g = torch.Generator().manual_seed(5)
    parts = [
        torch.randn(1000, generator=g),
        torch.randn(ROW * 3 + 1, generator=g),
        torch.ones(7, dtype=torch.bool),
    ]

    def expected(entries: list[tuple[int, torch.Tensor]]) -> int:
        total = sum(w * _host_sum(t.reshape(-1).view(torch.uint8).numpy()) for w, t in entries)
        return total % (MASK + 1)

    entries = [(_item_weight(t), tensor) for t, tensor in enumerate(parts)]
    first = _device_sum(entries) % (MASK + 1)
    assert first == expected(entries)
    assert _KEPT[torch.device("cpu")].sources[1].data_ptr() == parts[1].data_ptr()  # kept, a view
    flip(parts[1], ROW * 64 + 3)  # in place, past the first row
    flipped = _device_sum(entries) % (MASK + 1)
    assert flipped == expected(entries) != first
    entries[0] = (entries[0][0], torch.randn(1000, generator=g))  # another tensor, same shape
    assert _device_sum(entries) % (MASK + 1) == expected(entries) != flipped
    entries[2] = (_item_weight(9), entries[2][1])  # the same tensor at another place in the items
    assert _device_sum(entries) % (MASK + 1) == expected(entries)


def test_a_sparse_tensor_is_refused_with_a_typed_error() -> None:
    """A tensor without dense bytes is refused, not silently skipped."""
    with pytest.raises(UsageError, match="dense"):
        digest([("s", torch.eye(3).to_sparse())])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_the_cuda_path_gives_the_cpu_digest(dtype: torch.dtype) -> None:
    """Tensors on a GPU digest there to the same value as their CPU copies, bit flips included."""
    items = tensors(dtype)
    on_gpu = [(n, v.cuda() if isinstance(v, torch.Tensor) else v) for n, v in items]
    big = torch.randn(529 * ROW * 2 + 3, device="cuda")  # 529 rows: summed in place, in two blocks
    many = [(f"layer{i}", torch.randn(40 * ROW - i, device="cuda")) for i in range(30)]  # packed, 3 packs
    assert digest(on_gpu) == digest(items)
    small = [(n, v.clone()) for n, v in on_gpu if isinstance(v, torch.Tensor) and v.is_contiguous()]
    assert digest(small) == digest([(n, v.cpu()) for n, v in small])  # packed now, and kept
    assert _KEPT[small[0][1].device].sources[0].data_ptr() == small[0][1].data_ptr()
    flip(small[0][1], 3)  # in place: seen through the kept packing
    assert digest(small) == digest([(n, v.cpu()) for n, v in small])
    assert digest(many) == digest([(n, v.cpu()) for n, v in many])
    assert digest([("big", big)]) == digest([("big", big.cpu())])
    before = digest([("big", big)])
    flip(big, 12345)
    assert digest([("big", big)]) != before
