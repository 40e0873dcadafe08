"""Embedded infrastructure: a Kafka-protocol broker and an MLflow server on this machine.

``modelcanary up`` / ``down`` / ``status`` are thin wrappers over
:func:`~modelcanary.infra.embedded.up`, :func:`~modelcanary.infra.embedded.down` and
:func:`~modelcanary.infra.embedded.status`. :func:`~modelcanary.infra.topics.ensure_topics`
creates topics on any Kafka, embedded or not.
"""

from __future__ import annotations

from modelcanary.infra.embedded import ServiceState, ServiceStatus, down, status, up
from modelcanary.infra.state import EmbeddedState, ServiceRecord
from modelcanary.infra.topics import ensure_topics

__all__ = [
    "EmbeddedState",
    "ServiceRecord",
    "ServiceState",
    "ServiceStatus",
    "down",
    "ensure_topics",
    "status",
    "up",
]
