"""Dead-letter queues: see what is in one, and replay it into its topic once the cause is fixed.

    python -m clinic_platform.dlq list clinic.appointments.v1.events
    python -m clinic_platform.dlq replay clinic.appointments.v1.events [--event-id ID ...]

`replay` reads `<topic>.dlq` as the consumer group `clinic-dlq-replay` and puts each letter back
on `<topic>` as the original event (same key, same `ce_id` and CloudEvents headers, the `dlq_*`
headers removed), then commits, so a second replay does not send the same letters again. Every
consumer of the topic sees a replayed event again: those that applied it find its id in their
inbox and skip it, the one that failed applies it now. `--event-id` replays only those events,
looking through the whole DLQ and leaving the group's position alone. `list` shows ids, types,
consumers, attempts and errors, never payloads. The broker is KAFKA_BOOTSTRAP (default: the
local stack's).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition

from clinic_platform.events import dlq_for
from clinic_platform.kafka import DELIVERY_TIMEOUT_MS, producer_config
from clinic_platform.settings import LOCAL_KAFKA_PORT

REPLAY_GROUP = "clinic-dlq-replay"


@dataclass(frozen=True)
class Letter:
    event_id: str
    event_type: str
    consumer: str
    attempts: str
    error: str


def letter_of(msg: Message) -> Letter:
    headers = {k: (v or b"").decode(errors="replace") for k, v in msg.headers() or []}
    return Letter(
        headers.get("ce_id", "?"),
        headers.get("ce_type", "?"),
        headers.get("dlq_consumer", "?"),
        headers.get("dlq_attempts", "?"),
        headers.get("dlq_error", ""),
    )


def _messages(consumer: Consumer, idle_seconds: float, join_seconds: float = 30.0) -> Iterator[Message]:
    """Every message until none has come for `idle_seconds` since partitions were assigned (a
    group may take seconds to form). Reading to the reported end of each partition is not enough:
    the local broker reports it too low after batched writes."""
    start = time.monotonic()
    last = None
    while last is None or time.monotonic() - last < idle_seconds:
        msg = consumer.poll(0.2)
        if last is None and consumer.assignment():
            last = time.monotonic()
        if last is None and time.monotonic() - start > join_seconds:
            raise TimeoutError(f"no partition of the DLQ was assigned within {join_seconds} s")
        if msg is None or msg.error():
            continue
        last = time.monotonic()
        yield msg


def _whole_dlq(bootstrap: str, topic: str, idle_seconds: float) -> Iterator[Message]:
    """Every letter from the beginning, with no consumer group position read or written."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"dlq-reader-{uuid.uuid4()}", "log_level": 2}
    )
    try:
        meta = consumer.list_topics(dlq_for(topic), timeout=10).topics.get(dlq_for(topic))
        if meta is None or meta.error is not None:
            return
        consumer.assign([TopicPartition(dlq_for(topic), p, OFFSET_BEGINNING) for p in meta.partitions])
        yield from _messages(consumer, idle_seconds)
    finally:
        consumer.close()


def list_letters(bootstrap: str, topic: str, *, idle_seconds: float = 3.0) -> list[Letter]:
    return [letter_of(m) for m in _whole_dlq(bootstrap, topic, idle_seconds)]


def _put_back(producer: Producer, topic: str, msg: Message) -> None:
    original = [(k, v) for k, v in msg.headers() or [] if not k.startswith("dlq_")]
    producer.produce(topic, msg.value(), msg.key(), headers=original)
    if producer.flush(DELIVERY_TIMEOUT_MS / 1000 + 2):
        raise RuntimeError("the broker did not take a replayed event; it stays in the DLQ")


def replay(
    bootstrap: str, topic: str, *, event_ids: set[str] | None = None, idle_seconds: float = 3.0
) -> list[Letter]:
    """Put the letters of `<topic>.dlq` back on `topic`; returns those replayed."""
    producer = Producer(producer_config(bootstrap, "clinic-dlq-replay"))
    if event_ids is not None:
        chosen = [m for m in _whole_dlq(bootstrap, topic, idle_seconds) if letter_of(m).event_id in event_ids]
        for msg in chosen:
            _put_back(producer, topic, msg)
        return [letter_of(m) for m in chosen]
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": REPLAY_GROUP,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "log_level": 2,
        }
    )
    replayed: list[Letter] = []
    try:
        consumer.subscribe([dlq_for(topic)])
        for msg in _messages(consumer, idle_seconds):
            _put_back(producer, topic, msg)
            consumer.commit(message=msg, asynchronous=False)  # only once it is on the topic again
            replayed.append(letter_of(msg))
    finally:
        consumer.close()
    return replayed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clinic_platform.dlq", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["list", "replay"])
    parser.add_argument("topic", help="the original topic, e.g. clinic.appointments.v1.events")
    parser.add_argument("--event-id", action="append", help="replay only this event (repeatable)")
    parser.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", f"127.0.0.1:{LOCAL_KAFKA_PORT}")
    )
    parser.add_argument(
        "--idle-seconds", type=float, default=3.0, help="stop after this long without a letter"
    )
    args = parser.parse_args(argv)
    if args.command == "list":
        letters = list_letters(args.bootstrap, args.topic, idle_seconds=args.idle_seconds)
    else:
        ids = set(args.event_id) if args.event_id else None
        letters = replay(args.bootstrap, args.topic, event_ids=ids, idle_seconds=args.idle_seconds)
    for letter in letters:
        print("  ".join([letter.event_id, letter.event_type, letter.consumer, letter.attempts, letter.error]))
    print(f"{len(letters)} {'letters' if args.command == 'list' else 'replayed'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
