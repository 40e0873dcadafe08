"""Evaluator worker: `python pipelines/evaluate.py` is `modelcanary evaluate`."""

from __future__ import annotations

import sys

from modelcanary.cli import main

if __name__ == "__main__":
    sys.argv = ["modelcanary", "evaluate", *sys.argv[1:]]
    main()
