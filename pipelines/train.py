"""Train a demo model variant and register it in MLflow as a new version.

Examples::

    python pipelines/train.py --model demo-classifier --variant baseline
    python pipelines/train.py --variant bad --challenger --json
    python pipelines/train.py --variant good --tracking-uri sqlite:////tmp/mlflow.db

Variants (see ``modelcanary.demo_data``): ``baseline`` (StandardScaler + logistic
regression, ~0.96 test accuracy), ``good`` (as good or better), ``bad`` (~0.78, uses two
weak features only). The first version of a model becomes its champion.

Prints one line, ``demo-classifier version 2 (bad): test accuracy 0.778``, or with
``--json`` one JSON object with ``model``, ``version``, ``variant``, ``test_accuracy``.
"""

from __future__ import annotations

import argparse
import json
import sys

from modelcanary.api import register
from modelcanary.config import load_settings
from modelcanary.demo_data import VARIANTS, load_demo_dataset, test_accuracy, train_variant
from modelcanary.errors import ModelcanaryError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Example: python pipelines/train.py --variant bad --challenger",
    )
    parser.add_argument("--model", default=None, help="registered model name (MODELCANARY_MODEL)")
    parser.add_argument(
        "--variant",
        choices=VARIANTS,
        default="baseline",
        help="baseline (~0.96 test accuracy), good (as good or better), bad (~0.78)",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow URI (default: MODELCANARY_MLFLOW_URI or the server of `modelcanary up`)",
    )
    parser.add_argument("--seed", type=int, default=0, help="train/test split seed")
    parser.add_argument("--challenger", action="store_true", help="also set the `challenger` alias")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings()
        model_name = args.model or settings.model_name
        uri = args.tracking_uri or settings.resolved_mlflow_uri()
        data = load_demo_dataset(seed=args.seed)
        model = train_variant(args.variant, data)
        accuracy = test_accuracy(model, data)
        version = register(
            model,
            model_name,
            data.X_train,
            tracking_uri=uri,
            challenger=args.challenger,
            description=f"demo variant {args.variant!r}, test accuracy {accuracy:.3f}",
            metrics={"test_accuracy": accuracy},
            version_tags={"modelcanary.variant": args.variant},
        )
    except ModelcanaryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(
            json.dumps(
                {
                    "model": model_name,
                    "version": version,
                    "variant": args.variant,
                    "test_accuracy": round(accuracy, 4),
                }
            )
        )
    else:
        print(f"{model_name} version {version} ({args.variant}): test accuracy {accuracy:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
