"""modelcanary: safe, statistically sound canary and shadow releases of ML models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "register"]

if TYPE_CHECKING:
    from modelcanary.api import register


def __getattr__(name: str) -> Any:
    # `register` imports MLflow (~1 s); load it on first use, not at `import modelcanary`.
    if name == "register":
        from modelcanary.api import register

        return register
    raise AttributeError(f"module 'modelcanary' has no attribute {name!r}")
