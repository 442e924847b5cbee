"""Reading what is on a topic, for assertions: by partition assignment (no consumer group, so
no group-join delay), everything the broker holds right now.

The local broker reports a partition's high watermark too low after a multi-record batch (the
first offset of the last batch plus one: tests/integration/test_broker_conformance.py), so the
reader goes past it and stops once nothing more comes."""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]


def read_topic(bootstrap: str, topic: str, timeout: float = 20.0, quiet_seconds: float = 0.3) -> list[Record]:
    settings = {"bootstrap.servers": bootstrap, "group.id": "test-reader", "enable.auto.commit": False}
    consumer = Consumer({**settings, "fetch.wait.max.ms": 10, "log_level": 0})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        if topic not in metadata.topics or metadata.topics[topic].error is not None:
            return []
        partitions = list(metadata.topics[topic].partitions)
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions
        }
        wanted = {p: end for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in wanted])
        records: list[Record] = []
        position = {p: 0 for p in wanted}
        deadline = time.monotonic() + timeout
        quiet_since = None
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end: at {position}, end {wanted}")
            msg = consumer.poll(0.05)
            if msg is None or msg.error():
                reached = all(position[p] >= wanted[p] for p in wanted)
                quiet_since = quiet_since or time.monotonic()
                if reached and time.monotonic() - quiet_since >= quiet_seconds:
                    return records
                continue
            quiet_since = None
            headers = {k: v for k, v in (msg.headers() or [])}
            records.append(
                Record(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), headers)
            )
            position[msg.partition()] = msg.offset() + 1
    finally:
        consumer.close()
