"""Every command group module, imported once so its commands attach to the root app."""

from __future__ import annotations
