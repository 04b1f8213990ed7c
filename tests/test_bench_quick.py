"""`askq bench --quick` in `make test`: askq against the bare baseline, judged on ratios only.

The gate is a gross regression (askq's CPU per job over 2x bare's in the same run), never an
absolute time: on a shared machine every absolute figure moves, a ratio taken within one
round (both designs under the same load) far less.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from askq.bench.openloop import MIN_RATE, arrivals, parse_rate
from askq.bench.rounds import Rounds
from askq.bench.run import gross_regression
from askq.bench.workload import Figures
from askq.errors import BenchError


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASKQ_")}
    return env | {"ASKQ_VAR_DIR": str(tmp_path)}


@pytest.mark.timeout(300)
def test_quick_bench_passes_on_ratios_and_reports_every_round(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "askq", "bench", "--quick", "--json"], env=_env(tmp_path),
                         capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    # Every round ran both designs to the last job, interleaved.
    assert len(result["rounds"]) == 3
    for row in result["rounds"]:
        assert sorted(row) == ["askq", "bare", "floor"]
        assert all(f["done"] == f["jobs"] == 300 for f in row.values())
    assert result["cpu_ratio_vs_bare"] <= 2.0
    assert result["cpu_ratio_vs_floor"] > 0 and result["jobs_per_s_ratio_vs_floor"] > 0
    ratios = result["ratios"]["cpu_ratio_vs_bare"]
    assert ratios["min"] <= result["cpu_ratio_vs_bare"] == ratios["median"] <= ratios["max"]
    # The keys --json always had are still there.
    assert {"jobs_per_s", "p99_s", "cpu_ms_per_job", "askq", "bare", "ratio_vs_bare", "latency_s"} <= set(result)
    assert "gross regression" not in out.stderr


def _figures(name: str, jobs_per_s: float, cpu_ms: float, done: int = 100) -> Figures:
    return Figures(name=name, workers=1, concurrency=10, jobs=100, done=done, wall_s=1.0, jobs_per_s=jobs_per_s,
                   p50_s=1.0, p95_s=1.0, p99_s=1.0, wait_p50_s=0.0, wait_p99_s=0.0, cpu_ms_per_job=cpu_ms,
                   peak_rss_mb=1.0)


def test_ratios_are_taken_within_each_round_then_summed_up() -> None:
    # Each round's ratio is taken under that round's load: 0.5, 2.0 and 1.0, median 1.0. The
    # ratio of the designs' medians (5.0 / 4.0 = 1.25) would mix the loads of different rounds.
    rounds = Rounds(rounds=[
        {"askq": _figures("askq", 100, 2.0), "bare": _figures("bare", 100, 4.0)},
        {"askq": _figures("askq", 50, 5.0), "bare": _figures("bare", 50, 2.5)},
        {"askq": _figures("askq", 40, 9.0), "bare": _figures("bare", 40, 9.0)},
    ], loads=[1.0, 9.0])
    summary = rounds.as_dict()
    assert summary["ratios"]["cpu_ratio_vs_bare"] == {"median": 1.0, "min": 0.5, "max": 2.0}
    assert summary["cpu_ratio_vs_bare"] == 1.0
    assert summary["summary"]["askq"]["cpu_ms_per_job"] == {"median": 5.0, "min": 2.0, "max": 9.0}
    assert "jobs_per_s_ratio_vs_floor" not in summary  # no floor ran: no ratio made up
    assert summary["load"] == {"min": 1.0, "max": 9.0}


def test_the_quick_gate_fails_on_a_gross_regression_or_an_unfinished_burst_only() -> None:
    def result(ratio: float, done: int = 100) -> dict[str, object]:
        return {"cpu_ratio_vs_bare": ratio, "rounds_n": 3,
                "rounds": [{"askq": _figures("askq", 1, 1, done).as_dict(), "bare": _figures("bare", 1, 1).as_dict()}]}

    assert gross_regression(result(1.9)) is None
    problem = gross_regression(result(2.4))
    assert problem is not None and "2.40x" in problem and "gross regression" in problem
    assert "askq 97/100" in (gross_regression(result(1.0, done=97)) or "")
    assert gross_regression({"rounds": []}) == "no CPU ratio to the bare baseline was measured"


def test_rate_is_jobs_per_s_or_a_share_of_the_measured_capacity() -> None:
    assert parse_rate("120") == 120.0
    assert parse_rate("50%", capacity=300.0) == 150.0
    for bad, says in (("fast", "expected jobs/s"), ("0", "positive"), ("-5%", "positive"), ("nan", "positive"),
                      ("500%", "over 200%")):
        with pytest.raises(BenchError, match=says):
            parse_rate(bad, 100.0)
    # Poisson arrivals: increasing, mean gap 1/rate.
    at = arrivals(100.0, 5000, random.Random(1))
    assert all(b > a for a, b in itertools.pairwise(at))
    assert 45 < at[-1] < 55


def test_a_bad_rate_is_refused_before_anything_starts(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "askq", "bench", "--rate", "half"], env=_env(tmp_path),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "--rate 'half': expected jobs/s" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "bench").exists()


def test_a_rate_too_low_to_finish_in_bounded_time_is_refused(tmp_path: Path) -> None:
    # 200 jobs at 0.001 jobs/s would run for 55 hours: refused before anything starts, saying the floor.
    out = subprocess.run([sys.executable, "-m", "askq", "bench", "--rate", "0.001"], env=_env(tmp_path),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "--rate '0.001'" in out.stderr and f"at least {MIN_RATE:g} jobs/s" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "bench").exists()
    # A share is checked once the capacity it is a share of is known.
    assert parse_rate("1%") == 0.0
    with pytest.raises(BenchError, match="at least"):
        parse_rate("1%", capacity=300.0)
    assert parse_rate(f"{MIN_RATE}") == MIN_RATE


def test_a_plot_path_that_cannot_be_written_is_refused_before_anything_starts(tmp_path: Path) -> None:
    # The plot is drawn at the very end: a bad path used to end a ten-minute run in a traceback.
    (tmp_path / "afile").write_text("")
    for plot, says in ((tmp_path / "bench.txt", "a .png path"), (tmp_path / "afile" / "x.png", "cannot write"),
                       (tmp_path / "adir.png", "is a directory")):
        if plot.name == "adir.png":
            plot.mkdir()
        out = subprocess.run([sys.executable, "-m", "askq", "bench", "--plot", str(plot)], env=_env(tmp_path),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, (plot, out.stderr)
        assert f"--plot {str(plot)!r}" in out.stderr and says in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
        assert not (tmp_path / "bench").exists()
