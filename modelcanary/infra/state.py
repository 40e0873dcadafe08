"""The record of the running embedded services: ``<data_dir>/infra.json``.

This file is the pid file of both services. Its shape is a contract with
:meth:`modelcanary.config.Settings.resolved_kafka_bootstrap` and
``resolved_mlflow_uri``, which read the ``address`` fields::

    {"broker": {"address": "127.0.0.1:19092", "pid": 123, "create_time": 1.7e9,
                "log": "/abs/.modelcanary/logs/broker.log"},
     "mlflow": {"address": "http://127.0.0.1:15000", "pid": 124, ...}}

A service is present only while we believe it runs; whether it really does is
decided by :meth:`ProcessHandle.is_running` (pid and creation time), which is how
stale entries are recognised.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from modelcanary.errors import InfraError
from modelcanary.infra.processes import ProcessHandle

ServiceName = Literal["broker", "mlflow"]
SERVICES: tuple[ServiceName, ...] = ("broker", "mlflow")


@dataclass(frozen=True)
class ServiceRecord:
    """Where an embedded service listens, which process it is, where it logs."""

    address: str
    process: ProcessHandle
    log: Path

    def to_json(self) -> dict[str, object]:
        return {"address": self.address, **self.process.to_json(), "log": str(self.log)}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> ServiceRecord:
        address, log = data.get("address"), data.get("log")
        if not isinstance(address, str) or not isinstance(log, str):
            raise ValueError(f"not a service record: {data!r}")
        return cls(address=address, process=ProcessHandle.from_json(data), log=Path(log))


@dataclass(frozen=True)
class EmbeddedState:
    """The embedded services we started and believe to be running."""

    broker: ServiceRecord | None = None
    mlflow: ServiceRecord | None = None

    def get(self, name: ServiceName) -> ServiceRecord | None:
        return self.broker if name == "broker" else self.mlflow

    def with_service(self, name: ServiceName, record: ServiceRecord | None) -> EmbeddedState:
        return replace(self, **{name: record})

    def is_empty(self) -> bool:
        return self.broker is None and self.mlflow is None

    def to_json(self) -> dict[str, object]:
        return {name: rec.to_json() for name in SERVICES if (rec := self.get(name)) is not None}


def load_state(path: Path) -> EmbeddedState:
    """Read the state file; a missing file is the empty state.

    Raises :class:`InfraError` if the file exists but cannot be parsed.
    """
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return EmbeddedState(
            **{
                name: ServiceRecord.from_json(data[name])
                for name in SERVICES
                if data.get(name) is not None
            }
        )
    except FileNotFoundError:
        return EmbeddedState()
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise InfraError(
            f"{path} is unreadable ({exc}): run `modelcanary down`, which removes it"
        ) from exc


def save_state(path: Path, state: EmbeddedState) -> None:
    """Write the state atomically; the empty state removes the file."""
    if state.is_empty():
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=2) + "\n")
    os.replace(tmp, path)
