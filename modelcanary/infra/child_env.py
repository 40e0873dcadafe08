"""Environment of the child processes we start (broker, MLflow server).

Copies the caller's environment and adds the variables that keep MLflow and
BentoML quiet and small, unless the caller already set them. This copies the
environment for children; it does not read settings (that is ``config.py``'s job).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

#: Defaults for every MLflow / BentoML child process (see /work/shared/STACK.md).
QUIET_DEFAULTS: Mapping[str, str] = {
    # no telemetry lookup thread
    "MLFLOW_DISABLE_TELEMETRY": "true",
    # `mlflow server` then runs 2 processes and ~500 MB instead of 10 and ~1.9 GB
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "GIT_PYTHON_REFRESH": "quiet",
    "BENTOML_DO_NOT_TRACK": "true",
}


def child_env(
    extra: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``base`` (``os.environ`` by default) + :data:`QUIET_DEFAULTS` where unset + ``extra``."""
    env = dict(os.environ if base is None else base)
    for name, value in QUIET_DEFAULTS.items():
        env.setdefault(name, value)
    env.update(extra or {})
    return env
