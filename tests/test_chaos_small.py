"""A small `askq chaos` run: kills, a freeze, a Redis restart and bad messages lose nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.chaos import run_chaos


@pytest.mark.timeout(150)
def test_small_chaos_run_passes_every_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_chaos(jobs=200, deadline_s=90, as_json=True, workers=2, concurrency=20, every_s=3.0,
                     latency_s=0.2, lease_s=3.0, var_dir=tmp_path)
    out = json.loads(capsys.readouterr().out)
    assert out["jobs"] == 200
    assert out["lost"] == 0, out["states"]
    assert out["duplicates"] == 0
    assert out["not_exactly_one_terminal"] == 0
    assert out["invalid_dead_lettered"] == out["invalid_sent"]
    kinds = {e["event"] for e in out["events"]}
    assert {"killed", "froze", "resumed", "redis_restarted", "malformed_burst"} <= kinds
    assert out["passed"] is True and code == 0
