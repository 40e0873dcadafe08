"""The serving router: which version answers a request, and the events every model call emits.

It holds an immutable :class:`ServingSnapshot` (loaded models + routing table) that a
background thread rebuilds from MLflow every ``reconcile_interval_s`` and swaps in one
assignment, so a request always sees one consistent split. A challenger failure never
reaches the user: the champion answers and the failure is recorded as the challenger's
error event. Shadow calls run after the user's answer is computed, off the request path.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from modelcanary.errors import ModelcanaryError
from modelcanary.events import Arm, Mode, OutcomeEvent, PredictionEvent
from modelcanary.rollout_store import ModelSnapshot
from modelcanary.routing import RoutingTable

log = logging.getLogger(__name__)


class Predictor(Protocol):
    version: str
    feature_names: list[str]

    def predict(self, rows: list[dict[str, Any]]) -> list[tuple[Any, float | None]]: ...


class Publisher(Protocol):
    def publish(self, topic: str, event: Any) -> None: ...


class InvalidRequestError(ModelcanaryError):
    """A request a client must fix (missing or unknown features, bad values)."""


class NotReadyError(ModelcanaryError):
    """The router cannot answer yet (no champion registered or loaded)."""


@dataclass(frozen=True)
class ServingSnapshot:
    champion: Predictor | None = None
    challenger: Predictor | None = None
    table: RoutingTable = field(default_factory=RoutingTable)
    loaded_at: float = 0.0


@dataclass(frozen=True)
class Answer:
    request_id: str
    prediction: Any
    score: float | None
    version: str
    arm: Arm


class ModelRouter:
    def __init__(
        self,
        model: str,
        predictions_topic: str,
        outcomes_topic: str,
        publisher: Publisher,
        read_snapshot: Callable[[], ModelSnapshot],
        load_predictor: Callable[[str], Predictor],
        reconcile_interval_s: float = 1.0,
        log_features: bool = True,
    ) -> None:
        self.model = model
        self.predictions_topic = predictions_topic
        self.outcomes_topic = outcomes_topic
        self.publisher = publisher
        self._read_snapshot = read_snapshot
        self._load_predictor = load_predictor
        self.reconcile_interval_s = reconcile_interval_s
        self.log_features = log_features
        self.snapshot = ServingSnapshot()
        self.last_reconcile_error: str | None = None
        self._cache: dict[str, Predictor] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._shadow_tasks: set[asyncio.Task[None]] = set()

    # -- control plane -------------------------------------------------------------
    def reconcile(self) -> ServingSnapshot:
        """Re-read aliases and rollout from the registry; load new versions; swap atomically."""
        state = self._read_snapshot()
        champion = self._predictor(state.champion_version)
        challenger = None
        table = RoutingTable()
        rollout = state.rollout
        if (
            rollout is not None
            and rollout.routes_traffic
            and state.challenger_version is not None
            and str(state.challenger_version) == rollout.challenger_version
        ):
            challenger = self._predictor(state.challenger_version)
            table = RoutingTable(
                rollout_id=rollout.rollout_id,
                mode=rollout.mode,
                traffic_fraction=rollout.traffic_fraction,
                step=rollout.step,
            )
        self.snapshot = ServingSnapshot(champion, challenger, table, time.time())
        self._cache = {v: p for v, p in self._cache.items() if p in (champion, challenger)}
        return self.snapshot

    def _predictor(self, version: str | None) -> Predictor | None:
        if version is None:
            return None
        version = str(version)
        if version not in self._cache:
            self._cache[version] = self._load_predictor(version)
            log.info("loaded %s version %s", self.model, version)
        return self._cache[version]

    def start(self) -> None:
        try:
            self.reconcile()
            self.last_reconcile_error = None
        except Exception as exc:  # the loop below keeps retrying
            self.last_reconcile_error = str(exc)
            log.warning("initial reconcile failed: %s", exc)
        self._thread = threading.Thread(target=self._loop, name="reconcile", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.reconcile_interval_s):
            try:
                self.reconcile()
                self.last_reconcile_error = None
            except Exception as exc:  # keep serving the last known split
                self.last_reconcile_error = str(exc)
                log.warning("reconcile failed, serving the last known split: %s", exc)

    def stop(self) -> None:
        self._stop.set()

    # -- data plane -----------------------------------------------------------------
    def _validate(self, features: dict[str, Any], predictor: Predictor) -> None:
        expected = set(predictor.feature_names)
        missing = sorted(expected - features.keys())
        extra = sorted(features.keys() - expected)
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing feature(s) {missing[:10]}")
            if extra:
                parts.append(f"unknown feature(s) {extra[:10]}")
            raise InvalidRequestError("; ".join(parts))

    def _call(
        self,
        predictor: Predictor,
        arm: Arm,
        mode: Mode,
        served: bool,
        features: dict[str, Any],
        request_id: str,
        unit_id: str | None,
        table: RoutingTable,
    ) -> tuple[PredictionEvent, bool]:
        started = time.perf_counter()
        try:
            prediction, score = predictor.predict([features])[0]
            error = None
        except Exception as exc:
            prediction, score, error = None, None, f"{type(exc).__name__}: {exc}"[:200]
        latency_ms = (time.perf_counter() - started) * 1000.0
        event = PredictionEvent(
            model=self.model,
            request_id=request_id,
            version=predictor.version,
            arm=arm,
            mode=mode,
            served=served and error is None,
            prediction=prediction,
            score=score,
            latency_ms=latency_ms,
            error=error,
            unit_id=unit_id,
            rollout_id=table.rollout_id,
            step=table.step,
            traffic_fraction=table.traffic_fraction if table.rollout_id else None,
            features=features if self.log_features else None,
        )
        self.publisher.publish(self.predictions_topic, event)
        return event, error is None

    async def predict(
        self, features: dict[str, Any], request_id: str | None = None, unit_id: str | None = None
    ) -> Answer:
        snap = self.snapshot
        if snap.champion is None:
            raise NotReadyError(
                f"no champion of {self.model} is loaded yet: register a first version "
                "(pipelines/train.py) and wait a second"
            )
        self._validate(features, snap.champion)
        request_id = request_id or uuid.uuid4().hex
        table = snap.table
        route = table.route(unit_id or request_id)
        if route.served_by is Arm.CHALLENGER and snap.challenger is not None:
            event, ok = self._call(
                snap.challenger,
                Arm.CHALLENGER,
                Mode.CANARY,
                True,
                features,
                request_id,
                unit_id,
                table,
            )
            if ok:
                return Answer(
                    request_id, event.prediction, event.score, event.version, Arm.CHALLENGER
                )
        event, ok = self._call(
            snap.champion, Arm.CHAMPION, table.mode, True, features, request_id, unit_id, table
        )
        if not ok:
            raise RuntimeError(f"champion version {event.version} failed: {event.error}")
        if route.mirror_to_challenger and snap.challenger is not None:
            task = asyncio.create_task(
                self._shadow(snap.challenger, features, request_id, unit_id, table)
            )
            self._shadow_tasks.add(task)
            task.add_done_callback(self._shadow_tasks.discard)
        return Answer(request_id, event.prediction, event.score, event.version, Arm.CHAMPION)

    async def _shadow(
        self,
        predictor: Predictor,
        features: dict[str, Any],
        request_id: str,
        unit_id: str | None,
        table: RoutingTable,
    ) -> None:
        await asyncio.to_thread(
            self._call,
            predictor,
            Arm.CHALLENGER,
            Mode.SHADOW,
            False,
            features,
            request_id,
            unit_id,
            table,
        )

    def feedback(
        self, request_id: str, label: Any = None, kpis: dict[str, float] | None = None
    ) -> OutcomeEvent:
        if label is None and not kpis:
            raise InvalidRequestError("give a label and/or at least one KPI value")
        event = OutcomeEvent(
            model=self.model, request_id=request_id, label=label, kpis=dict(kpis or {})
        )
        self.publisher.publish(self.outcomes_topic, event)
        return event

    def health(self) -> dict[str, Any]:
        snap = self.snapshot
        table = snap.table
        return {
            "status": "ok"
            if snap.champion is not None and not self.last_reconcile_error
            else "degraded",
            "model": self.model,
            "champion_version": snap.champion.version if snap.champion else None,
            "challenger_version": snap.challenger.version if snap.challenger else None,
            "rollout_id": table.rollout_id,
            "mode": table.mode.value,
            "traffic_fraction": table.traffic_fraction,
            "step": table.step,
            "reconciled_at": snap.loaded_at,
            "reconcile_error": self.last_reconcile_error,
        }
