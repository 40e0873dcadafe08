"""Controller worker: `python pipelines/control.py` is `modelcanary control`."""

from __future__ import annotations

import sys

from modelcanary.cli import main

if __name__ == "__main__":
    sys.argv = ["modelcanary", "control", *sys.argv[1:]]
    main()
