"""Kafka client configuration (confluent-kafka / librdkafka) and topic provisioning."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

log = logging.getLogger(__name__)

# How long a produced message may wait for the broker before its delivery fails; the outbox
# relay then backs off and publishes it again, so this bounds one attempt, not the retrying.
DELIVERY_TIMEOUT_MS = 5000


def producer_config(bootstrap: str, client_id: str) -> dict:
    return {
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        "enable.idempotence": True,  # implies acks=all and ordered retries per partition
        "acks": "all",
        "linger.ms": 2,
        "message.timeout.ms": DELIVERY_TIMEOUT_MS,
        "socket.connection.setup.timeout.ms": 3000,
        "reconnect.backoff.max.ms": 1000,
        "topic.metadata.refresh.interval.ms": 5000,
        "log_level": 3,  # errors only: a down broker is reported by our own retry log
    }


def consumer_config(bootstrap: str, group_id: str) -> dict:
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
        "fetch.wait.max.ms": 10,
        "topic.metadata.refresh.interval.ms": 5000,
        "reconnect.backoff.max.ms": 1000,
        "socket.connection.setup.timeout.ms": 3000,
        "log_level": 3,
    }


def ensure_topics(bootstrap: str, topics: list[str], partitions: int = 3, timeout: float = 10.0) -> None:
    """Create the topics that do not exist yet (blocking; call it in a worker thread)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    futures = admin.create_topics([NewTopic(t, partitions, 1) for t in topics], request_timeout=timeout)
    for topic, future in futures.items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        else:
            log.info("created topic", extra={"topic": topic})
