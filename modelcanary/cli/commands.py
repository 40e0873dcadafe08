"""Every command group module, imported once so its commands attach to the root app."""

from __future__ import annotations

from modelcanary.cli import demo, history, infra, registry, report, rollout, run  # noqa: F401
