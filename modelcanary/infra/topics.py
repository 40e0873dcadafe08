"""Create the Kafka topics modelcanary uses, with the partition count we choose.

Producing to an unknown topic makes Tansu (and Kafka with auto-creation on) create
it with the broker's default partition count. The join of predictions with
outcomes needs both topics to have the same number of partitions, so topics are
created explicitly, and an existing topic with another count is an error rather
than something to work around silently.
"""

from __future__ import annotations

from collections.abc import Iterable

import kafka.errors as kafka_errors
from kafka.admin import KafkaAdminClient

from modelcanary.errors import BrokerUnavailableError, InfraError

TOPIC_ADMIN_TIMEOUT_S = 10.0
# -1 lets the broker apply its default.replication.factor (1 on the embedded broker).
BROKER_DEFAULT_REPLICATION = -1

_UNREACHABLE = (
    kafka_errors.KafkaTimeoutError,
    kafka_errors.KafkaConnectionError,
    kafka_errors.NodeNotReadyError,
)


def ensure_topics(
    bootstrap: str,
    topics: Iterable[str],
    partitions: int,
    *,
    replication_factor: int = BROKER_DEFAULT_REPLICATION,
    timeout_s: float = TOPIC_ADMIN_TIMEOUT_S,
) -> None:
    """Create ``topics`` with ``partitions`` partitions each; existing ones are left as they are.

    Idempotent. Raises :class:`BrokerUnavailableError` if the broker at
    ``bootstrap`` cannot be reached within ``timeout_s``, and :class:`InfraError`
    if a topic cannot be created or exists with a different partition count.
    """
    names = list(dict.fromkeys(topics))
    if not names:
        return
    timeout_ms = int(timeout_s * 1000)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="modelcanary-admin",
            request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
        )
    except _UNREACHABLE as exc:
        raise BrokerUnavailableError(
            f"Kafka at {bootstrap} cannot be reached ({exc}): check that it runs and that "
            "MODELCANARY_KAFKA_BOOTSTRAP names it, or unset it and run `modelcanary up`"
        ) from exc
    try:
        _create_missing(admin, names, partitions, replication_factor, timeout_ms)
        _check_partitions(admin, names, partitions)
    except _UNREACHABLE as exc:
        raise BrokerUnavailableError(
            f"Kafka at {bootstrap} stopped answering while creating topics ({exc})"
        ) from exc
    except kafka_errors.KafkaError as exc:
        raise InfraError(f"cannot create topics {', '.join(names)} on {bootstrap}: {exc}") from exc
    finally:
        admin.close()


def _create_missing(
    admin: KafkaAdminClient,
    names: list[str],
    partitions: int,
    replication_factor: int,
    timeout_ms: int,
) -> None:
    request = {
        name: {"num_partitions": partitions, "replication_factor": replication_factor}
        for name in names
    }
    response = admin.create_topics(request, timeout_ms=timeout_ms, raise_errors=False)
    failures = []
    for topic in response["topics"]:
        error = kafka_errors.for_code(topic["error_code"])
        if error is kafka_errors.NoError or error is kafka_errors.TopicAlreadyExistsError:
            continue
        reason = topic.get("error_message") or error.__name__
        failures.append(f"{topic['name']} ({reason})")
    if failures:
        raise InfraError(f"cannot create topics: {'; '.join(failures)}")


def _check_partitions(admin: KafkaAdminClient, names: list[str], partitions: int) -> None:
    # A created topic can take a moment to appear in metadata on a real cluster.
    admin.wait_for_topics(names)
    described = {t["name"]: t for t in admin.describe_topics(names)}
    for name in names:
        found = len(described.get(name, {}).get("partitions") or [])
        if found != partitions:
            raise InfraError(
                f"topic {name} has {found} partitions but {partitions} are configured: "
                f"set MODELCANARY_PARTITIONS={found}, or recreate the topic (the embedded "
                "broker keeps no data: `modelcanary down` then `modelcanary up`)"
            )
