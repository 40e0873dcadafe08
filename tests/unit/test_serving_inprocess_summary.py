"""The in-process serving benchmark's summary: start order cancelled, figures per duel kept."""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchmarks.serving_inprocess import fixed_addresses_prefix, summarise


def _duel(first: str, plain: float, canary: float, added: float) -> dict:
    return {
        "started_first": first,
        "plain_us": plain,
        "canary_us": canary,
        "added_us": added,
        "added_thread_us": added - 10.0,
    }


def test_the_start_order_effect_cancels_out_and_is_reported() -> None:
    # True cost 60 us; whichever variant started second looks 8 us cheaper.
    duels = [
        _duel("plain", 1000.0, 1068.0, 68.0),
        _duel("canary", 1000.0, 1052.0, 52.0),
        _duel("plain", 1010.0, 1078.0, 68.0),
        _duel("canary", 1010.0, 1062.0, 52.0),
    ]
    summary = summarise(duels)
    assert summary["added_us"] == pytest.approx(60.0)
    assert summary["added_thread_us"] == pytest.approx(50.0)
    assert summary["order_bias_us"] == pytest.approx(8.0)
    assert summary["ratio_cpu"] == pytest.approx(1005.0 / 1065.0, abs=1e-3)
    assert summary["duels"] == duels


def test_fixed_addresses_turns_address_randomisation_off_where_it_can() -> None:
    prefix = fixed_addresses_prefix()
    if not prefix:
        pytest.skip("setarch -R does not work on this machine")
    code = "print(open('/proc/self/personality').read())"
    out = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True)
    assert int(out.stdout.strip(), 16) & 0x0040000  # ADDR_NO_RANDOMIZE
