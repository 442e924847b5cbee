"""Does the broker keep what it acknowledges, with exactly the client settings the services use?

The relay produces with `producer_config(..., one_record_per_batch=False)` (multi-record batches,
idempotent, acks=all) and the consumers read with `consumer_config(...)` in a group, committing
explicit offsets after their effects. For those settings, on the stack's real broker:

- every record acknowledged by a delivery report is consumed, at the offset it was acknowledged
  at, by a fresh group and by a live consumer, and records of one key arrive in produced order;
- a group that commits part way, closes and comes back resumes at its committed offsets and gets
  the rest: nothing is skipped;
- and, separately, the high watermark the broker reports: Tansu 0.6.0 reports the base offset of
  a partition's last batch + 1, which misses the rest of that batch (a strict xfail below);
- a group member closed after its join is replaced at once; one closed in the middle of its first
  join is never expired by Tansu 0.6.0, so the group's next member gets no partitions (a strict
  xfail below; why tests restarting a service wait until its consumer has joined again).

Consumers here read until they have seen every produced record or a deadline passes, never "up
to the high watermark", because the watermark is the thing in doubt.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from clinic_platform.kafka import consumer_config, ensure_topics, producer_config

RECORDS = 10_000
KEYS = 64
PARTITIONS = 3
DEADLINE_SECONDS = 30.0


@dataclass
class Produced:
    topic: str
    # record id -> (partition, offset) from its delivery report
    acknowledged: dict[int, tuple[int, int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    max_records_per_batch: int = 0  # from librdkafka's statistics: proves batching happened

    def ends(self) -> dict[int, int]:
        """The real end of each partition: one past the highest acknowledged offset."""
        ends: dict[int, int] = defaultdict(int)
        for partition, offset in self.acknowledged.values():
            ends[partition] = max(ends[partition], offset + 1)
        return dict(ends)


def key_of(record_id: int) -> bytes:
    return f"aggregate-{record_id % KEYS}".encode()


def produce(bootstrap: str, topic: str, count: int = RECORDS) -> Produced:
    """Produce `count` small keyed records as the outbox relay does: in rounds (here of 1 to 500
    records) that each end by waiting for every delivery report."""
    produced = Produced(topic)

    def on_stats(raw: str) -> None:
        batches = json.loads(raw).get("topics", {}).get(topic, {}).get("batchcnt", {})
        produced.max_records_per_batch = max(produced.max_records_per_batch, batches.get("max", 0))

    config = {
        **producer_config(bootstrap, "conformance", one_record_per_batch=False),
        "statistics.interval.ms": 100,
        "stats_cb": on_stats,
    }
    producer = Producer(config)

    def report(record_id: int):
        def callback(err, msg) -> None:
            if err is None:
                produced.acknowledged[record_id] = (msg.partition(), msg.offset())
            else:
                produced.errors.append(f"{record_id}: {err}")

        return callback

    sizes = random.Random(count)
    record_id = 0
    while record_id < count:
        for _ in range(min(sizes.randint(1, 500), count - record_id)):
            producer.produce(topic, str(record_id).encode(), key_of(record_id), on_delivery=report(record_id))
            record_id += 1
        assert producer.flush(DEADLINE_SECONDS) == 0, "some records got no delivery report"
    # One more statistics round, so the last batches are counted.
    until = time.monotonic() + 1
    while time.monotonic() < until:
        producer.poll(0.1)
    return produced


@dataclass(frozen=True)
class Seen:
    record_id: int
    key: bytes
    partition: int
    offset: int


def new_consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer(consumer_config(bootstrap, group))


def consume(
    consumer: Consumer, wanted: set[int], *, stop_after: int | None = None, commit: bool = True
) -> list[Seen]:
    """Read as the service consumer does (batches; commit each batch's next offsets after it is
    "processed") until every wanted id was seen, `stop_after` records were processed, or the
    deadline passes. Returns what was processed, in order."""
    seen: list[Seen] = []
    missing = set(wanted)
    deadline = time.monotonic() + DEADLINE_SECONDS
    while missing and time.monotonic() < deadline:
        done: dict[tuple[str, int], int] = {}
        for msg in consumer.consume(500, 0.25):
            if msg.error():
                continue
            record = Seen(int(msg.value()), msg.key(), msg.partition(), msg.offset())
            seen.append(record)
            missing.discard(record.record_id)
            done[(msg.topic(), msg.partition())] = msg.offset() + 1
            if stop_after is not None and len(seen) >= stop_after:
                missing.clear()  # stop here: the rest of this fetched batch is not processed
                break
        if done and commit:
            consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in done.items()], asynchronous=False
            )
    return seen


def assert_all_delivered_in_key_order(produced: Produced, seen: list[Seen]) -> None:
    ids = [s.record_id for s in seen]
    missing = set(produced.acknowledged) - set(ids)
    assert not missing, f"{len(missing)} of {len(produced.acknowledged)} acknowledged records never arrived"
    assert len(ids) == len(set(ids)) == len(produced.acknowledged), "records arrived more than once"
    # Each record is stored where its delivery report said, under its own key.
    assert all((s.partition, s.offset) == produced.acknowledged[s.record_id] for s in seen)
    assert all(s.key == key_of(s.record_id) for s in seen)
    # Per key, ids were produced in increasing order, so they must arrive in increasing order.
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for s in seen:
        by_key[s.key].append(s.record_id)
    out_of_order = [key for key, ids in by_key.items() if ids != sorted(ids)]
    assert not out_of_order, f"records of {len(out_of_order)} keys arrived out of order"


@pytest.fixture(scope="module")
def batched(stack) -> Produced:
    """RECORDS records produced in multi-record batches to a fresh three-partition topic."""
    topic = f"conformance.{uuid.uuid4().hex[:8]}"
    ensure_topics(stack.kafka_bootstrap, [topic], PARTITIONS)
    produced = produce(stack.kafka_bootstrap, topic)
    assert produced.errors == [], produced.errors[:5]
    assert len(produced.acknowledged) == RECORDS
    # Otherwise this module would only re-test one record per batch.
    assert produced.max_records_per_batch > 1, "the producer did not batch"
    return produced


def test_a_fresh_group_reads_every_acknowledged_record_in_key_order(stack, batched):
    consumer = new_consumer(stack.kafka_bootstrap, f"conformance-fresh-{uuid.uuid4().hex[:8]}")
    consumer.subscribe([batched.topic])
    try:
        seen = consume(consumer, set(batched.acknowledged))
    finally:
        consumer.close()
    assert_all_delivered_in_key_order(batched, seen)


def test_a_live_consumer_reads_every_record_produced_while_it_waits(stack):
    topic = f"conformance.{uuid.uuid4().hex[:8]}"
    ensure_topics(stack.kafka_bootstrap, [topic], PARTITIONS)
    consumer = new_consumer(stack.kafka_bootstrap, f"conformance-live-{uuid.uuid4().hex[:8]}")
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not consumer.assignment():  # joined the group and caught up with the empty topic
            assert time.monotonic() < deadline, "the consumer was never assigned its partitions"
            assert consumer.poll(0.1) is None
        result: list[Produced] = []
        producing = threading.Thread(target=lambda: result.append(produce(stack.kafka_bootstrap, topic)))
        producing.start()
        try:
            seen = consume(consumer, set(range(RECORDS)))
        finally:
            producing.join()
    finally:
        consumer.close()
    produced = result[0]
    assert produced.errors == [], produced.errors[:5]
    assert produced.max_records_per_batch > 1, "the producer did not batch"
    assert_all_delivered_in_key_order(produced, seen)


def test_a_group_resumes_from_its_committed_offsets_and_skips_nothing(stack, batched):
    group = f"conformance-resume-{uuid.uuid4().hex[:8]}"
    first = new_consumer(stack.kafka_bootstrap, group)
    first.subscribe([batched.topic])
    try:
        before = consume(first, set(batched.acknowledged), stop_after=RECORDS // 2)
        committed = {
            tp.partition: tp.offset
            for tp in first.committed([TopicPartition(batched.topic, p) for p in range(PARTITIONS)], 10)
        }
    finally:
        first.close()
    processed = {s.record_id for s in before}
    assert len(before) == RECORDS // 2
    # What was committed is exactly what was processed: per partition, one past its last record.
    for partition in range(PARTITIONS):
        offsets = [s.offset for s in before if s.partition == partition]
        assert committed[partition] == (max(offsets) + 1 if offsets else -1001)  # -1001: none yet

    second = new_consumer(stack.kafka_bootstrap, group)
    second.subscribe([batched.topic])
    try:
        after = consume(second, set(batched.acknowledged) - processed)
    finally:
        second.close()

    skipped = set(batched.acknowledged) - processed - {s.record_id for s in after}
    assert not skipped, f"{len(skipped)} records were never delivered to the group"
    for partition in range(PARTITIONS):
        offsets = [s.offset for s in after if s.partition == partition]
        if offsets and committed[partition] >= 0:
            assert min(offsets) == committed[partition], (
                f"partition {partition}: resumed at {min(offsets)}, committed {committed[partition]}"
            )
    assert not processed & {s.record_id for s in after}, "the resumed group re-read processed records"


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="Tansu 0.6.0 reports as high watermark the base offset of a partition's last batch + 1, "
    "missing the rest of that batch (the records themselves are all served). If this passes, the "
    "broker is fixed: remove this mark and the warnings in docs/performance.md and kafka.py.",
)
def test_the_reported_high_watermark_is_the_end_of_each_partition(stack, batched):
    consumer = new_consumer(stack.kafka_bootstrap, f"conformance-watermark-{uuid.uuid4().hex[:8]}")
    try:
        reported = {
            p: consumer.get_watermark_offsets(TopicPartition(batched.topic, p), timeout=10)[1]
            for p in range(PARTITIONS)
        }
    finally:
        consumer.close()
    real = batched.ends()
    print(f"high watermarks reported {reported}, real ends {real}")  # shown with -rA / on failure
    assert reported == real, (
        f"the broker reports {sum(reported.values())} records ({reported}) where "
        f"{sum(real.values())} are stored ({real})"
    )


JOIN_DEADLINE_SECONDS = 20.0  # a join takes about 3 s on the local broker


def joins_within(consumer: Consumer, seconds: float) -> bool:
    """Poll (which drives the group protocol) until the consumer has partitions or time is up."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        consumer.poll(0.2)
        if consumer.assignment():
            return True
    return False


def group_after_a_member_leaves(stack, *, first_joins: bool) -> bool:
    """Does a second member of a group get partitions after the first one closed?"""
    topic, group = f"conformance-join-{uuid.uuid4().hex[:8]}", f"conformance-join-{uuid.uuid4().hex[:8]}"
    ensure_topics(stack.kafka_bootstrap, [topic], PARTITIONS)
    first = new_consumer(stack.kafka_bootstrap, group)
    first.subscribe([topic])
    if first_joins:
        assert joins_within(first, JOIN_DEADLINE_SECONDS), "the first member never joined"
    else:
        first.poll(0.2)  # the join has started
        if first.assignment():
            first.close()
            pytest.skip("the join finished before it could be interrupted")
    first.close()
    second = new_consumer(stack.kafka_bootstrap, group)
    second.subscribe([topic])
    try:
        return joins_within(second, JOIN_DEADLINE_SECONDS)
    finally:
        second.close()


def test_a_member_closed_after_its_join_is_replaced(stack):
    assert group_after_a_member_leaves(stack, first_joins=True)


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="Tansu 0.6.0 keeps a member closed in the middle of its first join and never expires it: "
    "the group's next member gets no partitions. If this passes, the broker is fixed: tests that "
    "restart a service (tests/support/records.restart_records) need not wait for its consumer to join.",
)
def test_a_member_closed_while_joining_is_replaced(stack):
    assert group_after_a_member_leaves(stack, first_joins=False), (
        f"no partitions for the next member within {JOIN_DEADLINE_SECONDS:.0f} s"
    )
