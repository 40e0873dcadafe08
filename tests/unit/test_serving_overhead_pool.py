"""Pooling runs of the overhead benchmark: all rounds, like runs only, clear refusals."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import median
from typing import Any

import pytest

from benchmarks import serving_overhead
from benchmarks.serving_overhead_pool import PoolError, load_run, main, pool

SETTINGS = {
    "saturation_s": "3.0", "latency_s": "8.0", "rate": "100.0", "concurrency": "16",
    "warmup_s": "3.0", "others_run": "False", "pause_s": "0.3", "slices": "3",
    "placement": "isolated", "worker_cpus": "off", "json": "x.json", "rounds": "2",
}  # fmt: skip


def _round(plain_rps: float, canary_rps: float) -> dict[str, Any]:
    row: dict[str, Any] = {"loadavg_1m_before": 0.5}
    for variant, rps in (("plain", plain_rps), ("canary", canary_rps), ("shadow", 400.0)):
        row |= {
            f"{variant}_rps": rps,
            f"{variant}_p50_ms": 3.0,
            f"{variant}_p99_ms": 5.0,
            f"{variant}_cpu_us_per_request_saturation": 1e6 / rps,
        }
    return row


def _run(ratios: list[float], code: str | None = "c0de", **settings: str) -> dict[str, Any]:
    run = {
        "rounds": [_round(500.0, 500.0 * ratio) for ratio in ratios],
        "settings": SETTINGS | settings,
        "loadgen": {"saturation": "hey", "latency": "python"},
    }
    if code is not None:
        run["code"] = {"served_code_sha256": code, "commit": "abc"}
    return run


def test_the_pooled_ratio_is_the_median_over_every_runs_rounds() -> None:
    first, second = [0.90, 0.94, 0.96], [0.97, 0.99]
    result = pool({"a": _run(first), "b": _run(second)})
    assert result["pooled"]["rounds"] == 5
    assert result["pooled"]["ratio_canary_rps"] == pytest.approx(median(first + second), abs=1e-3)
    low, high = result["pooled"]["ratio_canary_rps_interval_90"]
    assert 0.90 <= low <= 0.96 <= high <= 0.99
    assert [run["ratio_canary_rps"] for run in result["runs"]] == [0.94, 0.98]
    assert result["pooled"]["cpu_ratio_saturation"] == pytest.approx(0.96, abs=1e-3)


def test_runs_measured_differently_are_refused_naming_the_setting() -> None:
    with pytest.raises(PoolError, match=r"b was measured differently \(pause_s: 0.3 in a, 0 here"):
        pool({"a": _run([1.0]), "b": _run([1.0], pause_s="0")})


def test_runs_of_different_code_are_refused_and_runs_without_a_code_hash_are_named() -> None:
    with pytest.raises(PoolError, match=r"different code .*a: c0de, b: beef"):
        pool({"a": _run([1.0]), "b": _run([1.0], code="beef")})
    result = pool({"a": _run([1.0]), "old": _run([0.9], code=None)})
    assert result["served_code_sha256"] == "c0de"
    assert result["runs_without_code"] == ["old"]


def test_the_code_hash_follows_the_served_files_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("modelcanary/a.py", "serving/service.py", "benchmarks/plain_service.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x = 1\n")
    (tmp_path / "README.md").write_text("text")
    monkeypatch.setattr(serving_overhead, "REPO_ROOT", tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # no repo above
    first = serving_overhead.code_version()
    (tmp_path / "README.md").write_text("other text")
    assert serving_overhead.code_version() == first
    (tmp_path / "modelcanary/a.py").write_text("x = 2\n")
    assert serving_overhead.code_version()["served_code_sha256"] != first["served_code_sha256"]
    assert first["commit"] is None  # not a git checkout: no commit, no error


def test_a_file_that_is_not_details_gets_a_message_that_names_the_fix(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"ratio_canary_rps": 0.96}))
    with pytest.raises(PoolError, match="--details DETAILS"):
        load_run(summary)
    with pytest.raises(PoolError, match="no such file"):
        load_run(tmp_path / "missing.json")


def test_the_command_line_writes_the_pooled_json_and_refuses_a_file_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_run([0.95, 0.97])))
    b.write_text(json.dumps(_run([0.99])))
    out = tmp_path / "pooled.json"
    assert main([str(a), str(b), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["pooled"]["ratio_canary_rps"] == 0.97
    assert "pooled" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main([str(a), str(a)])
    assert exited.value.code == 2


def test_drawing_whole_runs_widens_the_interval_when_runs_differ() -> None:
    runs = {
        f"run{i}": _run([level - 0.01, level, level + 0.01] * 3)
        for i, level in enumerate((0.93, 0.95, 0.97, 0.99))
    }
    pooled = pool(runs)["pooled"]
    by_run_low, by_run_high = pooled["ratio_canary_rps_interval_90"]
    by_round_low, by_round_high = pooled["ratio_canary_rps_interval_90_by_round"]
    assert by_run_low < by_round_low and by_run_high > by_round_high
