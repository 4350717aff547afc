"""The typed payload decode of a Redis log's catch-up (`RedisLog.read_entries`,
`Codec.decode_typed_payloads`): it gives the records a plain decode gives, folds to the state
the validated path reaches, and what it does not check (a damaged entry, a record of another
shape) goes through the records path, which refuses it with the same error as before."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import fakeredis
import msgpack
import pytest
import torch
from _runs import three_seeds  # a sibling module

from bus import CorruptLogError, RedisLog
from lifecycle_es import CODEC, Lifecycle, SchemaError
from lifecycle_es.specs import BUILTIN_SPECS
from projections import MetricsProjection, RegistryProjection, Runner, StateTensors

Record = dict[str, Any]
Projections = tuple[RegistryProjection, StateTensors, MetricsProjection]


@pytest.fixture
def log() -> Iterator[RedisLog]:
    """A Redis log (on fakeredis) holding a short run of three seeds written by the real Lifecycle."""
    with RedisLog.from_client(fakeredis.FakeRedis(), f"typed-{uuid.uuid4().hex}") as redis_log:
        lc = Lifecycle(redis_log)
        three_seeds(lc)
        yield redis_log


def _projections() -> Projections:
    return RegistryProjection(BUILTIN_SPECS), StateTensors(BUILTIN_SPECS), MetricsProjection()


def _agree(fast: Projections, slow: Projections) -> None:
    assert fast[0].registry == slow[0].registry
    for name in ("state", "history", "metrics", "state_keys"):
        assert torch.equal(getattr(fast[1], name), getattr(slow[1], name)), name
    assert fast[2].snapshot() == slow[2].snapshot()
    assert fast[0].seq == fast[1].seq == fast[2].seq == slow[0].seq


def _put(log: RedisLog, seq: int, record: Record, entry_id: str | None = None) -> None:
    """Store an entry by hand, as another writer (or a damaged copy) might have."""
    log.client.xadd(log.key, {"d": msgpack.packb(record)}, id=entry_id or f"{seq}-0")


def test_typed_payloads_give_the_records_a_plain_decode_gives(log: RedisLog) -> None:
    """The structs of a page of payloads, turned back into records, equal the records `read` gives."""
    entries = log.read_entries(2, 9)
    payloads = log.stored_payloads(entries, 3)
    assert payloads is not None
    lines = CODEC.decode_typed_payloads(payloads, 3)
    assert lines is not None
    assert (lines.first_seq, lines.last_seq) == (3, 11)
    assert lines.records() == log.read(2, 9) == log.decode_entries(entries)


def test_a_redis_catch_up_reaches_the_state_the_validated_path_reaches(log: RedisLog) -> None:
    """Registry, state tensors and metrics caught up in pages of typed payloads (one projection
    ahead of the others) equal those caught up through the validated records."""
    payloads = log.stored_payloads(log.read_entries(), 1)
    assert payloads is not None
    assert CODEC.decode_typed_payloads(payloads, 1) is not None  # the whole run takes the typed path
    fast, slow = _projections(), _projections()
    fast[0].apply(log.read(limit=10))
    assert Runner(log, fast, batch_size=7).catch_up() == log.last_seq()
    Runner(log, slow, batch_size=7, validate=True).catch_up()
    _agree(fast, slow)


def test_entry_ids_that_do_not_run_up_by_one_give_no_payloads(log: RedisLog) -> None:
    """`stored_payloads` declines entries whose ids are not `<seq>-0` from the first seq on,
    and entries without the record field, so the caller decodes them as records instead."""
    entries = log.read_entries(0, 4)
    assert log.stored_payloads(entries, 1) is not None
    assert log.stored_payloads(entries, 2) is None
    assert log.stored_payloads([entries[0], entries[2]], 1) is None
    assert log.stored_payloads([(entries[0][0], {b"x": b""})], 1) is None


def test_a_payload_whose_seq_is_not_its_entrys_is_refused_as_before(log: RedisLog) -> None:
    """An entry holding another seq than its id's is a CorruptLogError on the typed path too."""
    last = log.last_seq()
    _put(log, last + 1, {**log.read(last - 1, 1)[0], "seq": last + 5})
    for validate in (False, True):
        with pytest.raises(CorruptLogError):
            Runner(log, _projections(), validate=validate).catch_up()


def test_a_record_of_another_shape_is_checked_record_by_record(log: RedisLog) -> None:
    """A payload the typed decode declines (a field of the wrong type) sends its page through
    `Codec.check`, which refuses it as the validated path does, with the records before it applied."""
    last = log.last_seq()
    record = log.read(last - 1, 1)[0]
    _put(log, last + 1, {**record, "seq": last + 1, "entity": 7})
    payloads = log.stored_payloads(log.read_entries(last), last + 1)
    assert payloads is not None
    assert CODEC.decode_typed_payloads(payloads, last + 1) is None
    for validate in (False, True):
        projections = _projections()
        with pytest.raises(SchemaError):
            Runner(log, projections, validate=validate, batch_size=last).catch_up()
        assert projections[0].seq == last
