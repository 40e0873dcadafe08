"""modelcanary: safe, statistically sound canary and shadow releases of ML models."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
