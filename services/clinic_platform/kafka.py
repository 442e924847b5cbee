"""Kafka client configuration (confluent-kafka / librdkafka) and topic provisioning."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

log = logging.getLogger(__name__)

# How long a produced message may wait for the broker before its delivery fails; the outbox
# relay then backs off and publishes it again, so this bounds one attempt, not the retrying.
DELIVERY_TIMEOUT_MS = 5000


def producer_config(bootstrap: str, client_id: str, *, one_record_per_batch: bool = False) -> dict:
    """Idempotent, acks=all producer settings that batch.

    Records go to the broker in multi-record batches, the local broker (Tansu 0.6.0) included:
    tests/integration/test_broker_conformance.py shows, for these settings, that it stores every
    acknowledged record at its acknowledged offset and serves all of them, in key order, to
    fresh, live and resumed consumer groups. What it gets wrong is only the high watermark it
    reports: the base offset of a partition's last batch + 1, missing the rest of that batch. So
    nothing may read "up to the high watermark" or compute lag from it against that broker.

    one_record_per_batch: one record per produce request, as was done while Tansu was thought to
    lose records of multi-record batches. The relay then publishes ~5x fewer events per second at
    ~20x the broker CPU per event (bench/outbox_relay.py); kept only as a switch for comparing."""
    return {
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        "enable.idempotence": True,  # implies acks=all and ordered retries per partition
        "acks": "all",
        # Records gather for up to 5 ms into larger batches (with 0 the relay's rounds went out in
        # smaller ones, at ~3x the broker CPU per event). The relay's flush() at the end of each
        # round sends at once, so this adds no latency there.
        "linger.ms": 5,
        **({"batch.num.messages": 1} if one_record_per_batch else {}),
        "message.timeout.ms": DELIVERY_TIMEOUT_MS,
        "socket.connection.setup.timeout.ms": 3000,
        "reconnect.backoff.max.ms": 1000,
        "topic.metadata.refresh.interval.ms": 5000,
        "log_level": 2,  # critical only: a down broker is reported once by our own retry log
    }


def consumer_config(bootstrap: str, group_id: str, *, fetch_wait_ms: int = 50) -> dict:
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "client.id": group_id,
        "enable.auto.commit": False,  # offsets are committed only after the effect is committed
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # Tansu stalls a new group for 20 s+ with the default session timeout and answers a
        # waiting fetch only when fetch.wait.max.ms runs out, so delivery latency follows it.
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
        "fetch.wait.max.ms": fetch_wait_ms,
        "topic.metadata.refresh.interval.ms": 5000,
        "reconnect.backoff.max.ms": 1000,
        "socket.connection.setup.timeout.ms": 3000,
        "log_level": 2,
    }


def ensure_topics(bootstrap: str, topics: list[str], partitions: int = 3, timeout: float = 10.0) -> None:
    """Create the topics that do not exist yet (blocking; call it in a worker thread)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 2})
    futures = admin.create_topics([NewTopic(t, partitions, 1) for t in topics], request_timeout=timeout)
    for topic, future in futures.items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        else:
            log.info("created topic", extra={"topic": topic})
