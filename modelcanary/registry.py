"""The MLflow model-registry adapter: versions, aliases, tags, loading. It decides nothing.

Every MLflow exception is translated here (``raise ... from exc``)::

    connection refused, timeout, 5xx   -> RegistryUnavailableError (says how to fix it)
    unknown model or version            -> RegistryError naming it
    anything else MLflow rejects        -> RegistryError with MLflow's message

Fast failure. MLflow's REST client retries a failed request 7 times with exponential
backoff and waits up to 120 s for an answer, so a dead server would block a caller for
minutes; serving replicas poll the registry every second. MLflow reads its HTTP policy
from ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` / ``MLFLOW_HTTP_REQUEST_TIMEOUT`` at each request
and offers no per-client setting, so constructing a :class:`Registry` sets process-wide
defaults of :data:`HTTP_MAX_RETRIES` retries and :data:`HTTP_TIMEOUT_S` seconds unless
those variables are already set (an explicit setting wins). It also sets
``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT`` so that a library call never writes to stdout.

Global state. Reads and alias/tag writes go through an ``MlflowClient`` bound to this
registry's URI. Logging a model needs MLflow's fluent API, whose tracking and registry
URIs are process-global: :meth:`Registry.register_sklearn` and
:meth:`Registry.register_model_uri` set them to this registry's URI (under a lock) and
leave them set.

Versions are strings everywhere (MLflow returns ints over SQLite and strings over REST).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from modelcanary.errors import RegistryError, RegistryUnavailableError
from modelcanary.predictor import Predictor, load_local_predictor
from modelcanary.registry_rest import RestModelReader

CHAMPION = "champion"
CHALLENGER = "challenger"
DEFAULT_EXPERIMENT = "modelcanary-training"
#: Folder, next to a SQLite store's database file, that holds its artifacts.
ARTIFACTS_DIRNAME = "mlartifacts"

HTTP_MAX_RETRIES = 0
HTTP_TIMEOUT_S = 5

_NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"}
_ALREADY_EXISTS = {"RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"}
# MLflow's fluent API has process-global URIs; register calls hold this while using it.
_FLUENT_LOCK = threading.Lock()


@dataclass(frozen=True)
class VersionInfo:
    """One registered version of a model, as the registry reports it."""

    version: str
    run_id: str | None
    created_at: datetime
    aliases: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    description: str | None = None


def _apply_mlflow_defaults() -> None:
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(HTTP_MAX_RETRIES))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(HTTP_TIMEOUT_S))
    # MLflow writes "View run ... at URL" to stdout after each run on a server, which
    # would corrupt the JSON that `pipelines/train.py --json` prints.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def _http_timeout_s() -> float:
    try:
        return float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", HTTP_TIMEOUT_S))
    except ValueError:
        return float(HTTP_TIMEOUT_S)


def _is_unreachable(exc: MlflowException) -> bool:
    """MLflow's REST client reports transport failures as plain messages, not codes."""
    message = str(exc.message)
    return message.startswith("API request to") and (
        "failed with exception" in message or "timeout" in message
    )


def sqlite_artifact_root(tracking_uri: str) -> str | None:
    """``file:`` URI of the artifact folder beside a SQLite store's file, else None."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    db_path = tracking_uri[len(prefix) :].split("?", 1)[0]
    if not db_path or db_path == ":memory:":
        return None
    return (Path(db_path).absolute().parent / ARTIFACTS_DIRNAME).as_uri()


class Registry:
    """Thin adapter over :class:`mlflow.MlflowClient` for one tracking/registry URI."""

    def __init__(self, tracking_uri: str) -> None:
        _apply_mlflow_defaults()
        self.tracking_uri = tracking_uri
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._rest = RestModelReader.for_uri(tracking_uri, _http_timeout_s())

    def __repr__(self) -> str:
        return f"Registry({self.tracking_uri!r})"

    # -- translation ----------------------------------------------------------------
    @contextlib.contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        """Run MLflow calls about ``what`` and turn their exceptions into ours."""
        try:
            yield
        except MlflowException as exc:
            if _is_unreachable(exc):
                raise self._unavailable(exc) from exc
            if exc.error_code in _NOT_FOUND:
                raise RegistryError(
                    f"{what} does not exist in MLflow at {self.tracking_uri} ({exc.message})"
                ) from exc
            raise RegistryError(
                f"{what}: MLflow at {self.tracking_uri} says: {exc.message}"
            ) from exc
        except requests.RequestException as exc:
            raise self._unavailable(exc) from exc

    @property
    def client(self) -> MlflowClient:
        """The MLflow client bound to this registry's URI (for sibling adapters)."""
        return self._client

    def translated(self, what: str) -> contextlib.AbstractContextManager[None]:
        """Public form of :meth:`_translated` for sibling adapters (audit log, reports)."""
        return self._translated(what)

    def _unavailable(self, exc: BaseException) -> RegistryUnavailableError:
        text = str(getattr(exc, "message", exc))
        lowered = text.lower()
        if "refused" in lowered:
            detail = "connection refused"
        elif "timeout" in lowered or "timed out" in lowered:
            detail = "no answer before the timeout (MLFLOW_HTTP_REQUEST_TIMEOUT)"
        else:
            detail = text.splitlines()[0][:200] if text else type(exc).__name__
        return RegistryUnavailableError(
            f"MLflow at {self.tracking_uri} is not reachable: run `modelcanary up` or set "
            f"MODELCANARY_MLFLOW_URI ({detail})"
        )

    # -- models ---------------------------------------------------------------------
    def exists(self, name: str) -> bool:
        """Whether a registered model called ``name`` exists."""
        with self._translated(f"registered model {name!r}"):
            try:
                self._client.get_registered_model(name)
            except MlflowException as exc:
                if exc.error_code in _NOT_FOUND:
                    return False
                raise
        return True

    def list_models(self) -> list[str]:
        """Names of all registered models, sorted."""
        names: list[str] = []
        token: str | None = None
        with self._translated("listing registered models"):
            while True:
                page = self._client.search_registered_models(max_results=1000, page_token=token)
                names.extend(m.name for m in page)
                token = page.token
                if not token:
                    break
        return sorted(names)

    def models_tagged(self, tag: str) -> dict[str, str]:
        """Every registered model that has ``tag``, with its value: one search, not one
        read per model (the registry returns the tags with each model it lists)."""
        quoted = tag.replace("`", "")
        found: dict[str, str] = {}
        token: str | None = None
        with self._translated(f"listing registered models tagged {tag}"):
            while True:
                page = self._client.search_registered_models(
                    filter_string=f"tags.`{quoted}` LIKE '%'", max_results=1000, page_token=token
                )
                for model in page:
                    value = (model.tags or {}).get(tag)
                    if value is not None:
                        found[model.name] = value
                token = page.token
                if not token:
                    break
        return found

    def list_versions(self, name: str) -> list[VersionInfo]:
        """All versions of ``name``, oldest first, with their aliases and tags."""
        aliases = self.aliases(name)  # also raises RegistryError for an unknown model
        by_version: dict[str, list[str]] = {}
        for alias, version in aliases.items():
            by_version.setdefault(version, []).append(alias)
        quoted = name.replace("'", "\\'")
        versions = []
        token: str | None = None
        with self._translated(f"versions of {name!r}"):
            while True:
                page = self._client.search_model_versions(
                    f"name = '{quoted}'", max_results=1000, page_token=token
                )
                versions.extend(page)
                token = page.token
                if not token:
                    break
        infos = [
            VersionInfo(
                version=str(v.version),
                run_id=v.run_id or None,
                created_at=datetime.fromtimestamp((v.creation_timestamp or 0) / 1000, UTC),
                aliases=tuple(sorted(by_version.get(str(v.version), ()))),
                tags=dict(v.tags or {}),
                description=v.description or None,
            )
            for v in versions
        ]
        return sorted(infos, key=lambda info: int(info.version))

    # -- aliases --------------------------------------------------------------------
    def aliases(self, name: str) -> dict[str, str]:
        """``{alias: version}`` of ``name`` in one call."""
        with self._translated(f"registered model {name!r}"):
            model = self._client.get_registered_model(name)
        return {alias: str(version) for alias, version in (model.aliases or {}).items()}

    def aliases_and_tags(self, name: str) -> tuple[dict[str, str], dict[str, str]]:
        """``({alias: version}, {tag: value})`` of ``name`` in one call (what routers poll).

        From an ``http://`` server without credentials, by one plain GET
        (:mod:`modelcanary.registry_rest`, ~8x less CPU than the client).
        """
        with self._translated(f"registered model {name!r}"):
            if self._rest is not None:
                try:
                    raw = self._rest.registered_model(name)
                except (OSError, http.client.HTTPException) as exc:
                    raise self._unavailable(exc) from exc
                return (
                    {a["alias"]: str(a["version"]) for a in raw.get("aliases", ())},
                    # protobuf's JSON leaves out empty strings: a tag without "value" is ""
                    {t["key"]: t.get("value", "") for t in raw.get("tags", ())},
                )
            model = self._client.get_registered_model(name)
        aliases = {alias: str(version) for alias, version in (model.aliases or {}).items()}
        return aliases, dict(model.tags or {})

    def alias_version(self, name: str, alias: str) -> str | None:
        """The version ``alias`` points at, or None when ``name`` has no such alias."""
        return self.aliases(name).get(alias)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``alias`` at ``version`` (moving it if it pointed elsewhere)."""
        with self._translated(f"version {version} of {name!r}"):
            self._client.set_registered_model_alias(name, alias, str(version))

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove ``alias`` from ``name``; nothing happens if it is not set."""
        if alias not in self.aliases(name):
            return
        with self._translated(f"alias {alias!r} of {name!r}"):
            self._client.delete_registered_model_alias(name, alias)

    # -- tags -----------------------------------------------------------------------
    def model_tags(self, name: str) -> dict[str, str]:
        with self._translated(f"registered model {name!r}"):
            return dict(self._client.get_registered_model(name).tags or {})

    def set_model_tags(self, name: str, tags: Mapping[str, str]) -> None:
        with self._translated(f"registered model {name!r}"):
            for key, value in tags.items():
                self._client.set_registered_model_tag(name, key, str(value))

    def delete_model_tags(self, name: str, keys: Iterable[str]) -> None:
        """Delete the tags ``keys`` of ``name``; keys that are not set are skipped."""
        present = self.model_tags(name)
        with self._translated(f"registered model {name!r}"):
            for key in keys:
                if key in present:
                    self._client.delete_registered_model_tag(name, key)

    def version_tags(self, name: str, version: str) -> dict[str, str]:
        with self._translated(f"version {version} of {name!r}"):
            return dict(self._client.get_model_version(name, str(version)).tags or {})

    def set_version_tags(self, name: str, version: str, tags: Mapping[str, str]) -> None:
        with self._translated(f"version {version} of {name!r}"):
            for key, value in tags.items():
                self._client.set_model_version_tag(name, str(version), key, str(value))

    # -- registering ----------------------------------------------------------------
    def register_sklearn(
        self,
        model_name: str,
        sk_model: Any,
        input_example: pd.DataFrame,
        *,
        description: str | None = None,
        version_tags: dict[str, str] | None = None,
        experiment: str = DEFAULT_EXPERIMENT,
        metrics: dict[str, float] | None = None,
        skops_trusted_types: list[str] | None = None,
    ) -> str:
        """Log ``sk_model`` in a new MLflow run and register it as a new version of ``model_name``.

        The signature is inferred from ``input_example`` and the model's predictions on
        it, so it names every input column. ``metrics`` are logged on the run. scikit-learn
        types that skops does not trust by default (tree internals of forests and
        boosting) are trusted automatically; other types must be listed in
        ``skops_trusted_types``.

        Order of side effects: run created → model logged and version registered → version
        description and tags → ``champion`` alias if the model had none. If a later step
        fails the version exists without it; registering again makes a new version.

        Returns the new version.
        """
        import mlflow
        import mlflow.sklearn
        from mlflow.models import infer_signature

        sample = input_example.head(5)
        signature = infer_signature(input_example, sk_model.predict(input_example))
        trusted = sorted(set(_sklearn_untrusted_types(sk_model)) | set(skops_trusted_types or ()))
        experiment_id = self._experiment_id(experiment)
        with self._translated(f"registering a version of {model_name!r}"), _FLUENT_LOCK:
            mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.set_registry_uri(self.tracking_uri)
            with mlflow.start_run(experiment_id=experiment_id, run_name=f"register-{model_name}"):
                if metrics:
                    mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
                info = mlflow.sklearn.log_model(
                    sk_model=sk_model,
                    name="model",
                    signature=signature,
                    input_example=sample,
                    registered_model_name=model_name,
                    pip_requirements=mlflow.sklearn.get_default_pip_requirements(
                        include_skops=True
                    ),
                    skops_trusted_types=trusted or None,
                )
        if info.registered_model_version is None:
            raise RegistryError(f"MLflow logged {model_name!r} but did not register a version")
        version = str(info.registered_model_version)
        self._finish_registration(model_name, version, description, version_tags)
        return version

    def register_model_uri(
        self,
        model_name: str,
        model_uri: str,
        *,
        description: str | None = None,
        version_tags: dict[str, str] | None = None,
    ) -> str:
        """Register an already-logged model (``runs:/RUN/model``, ``models:/...``) as a new version.

        Same order of side effects as :meth:`register_sklearn` after the version exists.
        """
        import mlflow

        with self._translated(f"model {model_uri!r}"), _FLUENT_LOCK:
            mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.set_registry_uri(self.tracking_uri)
            created = mlflow.register_model(model_uri, model_name)
        version = str(created.version)
        self._finish_registration(model_name, version, description, version_tags)
        return version

    def _finish_registration(
        self,
        name: str,
        version: str,
        description: str | None,
        version_tags: Mapping[str, str] | None,
    ) -> None:
        if description:
            with self._translated(f"version {version} of {name!r}"):
                self._client.update_model_version(name, version, description=description)
        if version_tags:
            self.set_version_tags(name, version, version_tags)
        # Two first registrations racing may both see no champion; the later one wins.
        if self.alias_version(name, CHAMPION) is None:
            self.set_alias(name, CHAMPION, version)

    def _experiment_id(self, name: str) -> str:
        """Id of experiment ``name``, created (artifacts beside a SQLite file) if missing."""
        with self._translated(f"experiment {name!r}"):
            found = self._client.get_experiment_by_name(name)
            if found is not None:
                if found.lifecycle_stage == "deleted":
                    raise RegistryError(
                        f"experiment {name!r} is deleted in MLflow at {self.tracking_uri}: "
                        "restore it in the MLflow UI or choose another experiment"
                    )
                return str(found.experiment_id)
            try:
                return str(
                    self._client.create_experiment(
                        name, artifact_location=sqlite_artifact_root(self.tracking_uri)
                    )
                )
            except MlflowException as exc:
                if exc.error_code not in _ALREADY_EXISTS:
                    raise
                return str(self._client.get_experiment_by_name(name).experiment_id)

    # -- loading --------------------------------------------------------------------
    def load_predictor(self, name: str, version: str) -> Predictor:
        """Download ``models:/NAME/VERSION`` and load it as a :class:`Predictor`.

        The download goes to a temporary folder, removed once an sklearn model is in
        memory; other flavors may read their files lazily, so their folder lives as long
        as the predictor.
        """
        import mlflow.artifacts

        workdir = tempfile.mkdtemp(prefix="modelcanary-model-")
        predictor = None
        try:
            # MLflow resolves ``models:/`` through its process-wide URIs whatever is passed
            # here: without setting them a process started from a clean environment cannot
            # load any model.
            with self._translated(f"version {version} of {name!r}"), _FLUENT_LOCK:
                mlflow.set_tracking_uri(self.tracking_uri)
                mlflow.set_registry_uri(self.tracking_uri)
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{name}/{version}",
                    dst_path=workdir,
                    tracking_uri=self.tracking_uri,
                    registry_uri=self.tracking_uri,
                )
                predictor = load_local_predictor(local, str(version))
        finally:
            if predictor is None or predictor.flavor == "sklearn":
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                weakref.finalize(predictor, shutil.rmtree, workdir, ignore_errors=True)
        return predictor


def _sklearn_untrusted_types(sk_model: Any) -> list[str]:
    """scikit-learn's own types in ``sk_model`` that skops does not trust by default."""
    import skops.io

    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(sk_model))
    return [t for t in untrusted if t.startswith("sklearn.")]
