"""Interleaved rounds: each design gets a burst in turn (A B C A B C ...), figures summed up per round.

On a shared machine the load moves by tens of percent between minutes, so a design measured
alone is compared with another measured under a different load. Here every round runs every
design back to back, ratios are taken within a round (the same load for both sides), and each
figure and ratio is reported as the median of the rounds with its minimum and maximum.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from askq.bench.measure import ProcWatch
from askq.bench.workload import Design, Figures

# Figures whose median/min/max are reported per design.
FIGURES = ("jobs_per_s", "p50_s", "p95_s", "p99_s", "wait_p50_s", "wait_p99_s", "cpu_ms_per_job", "peak_rss_mb")

# name -> (design, figure, other design): the ratio design.figure / other.figure in each round.
RATIOS: dict[str, tuple[str, str, str]] = {
    "ratio_vs_bare": ("askq", "jobs_per_s", "bare"),
    "cpu_ratio_vs_bare": ("askq", "cpu_ms_per_job", "bare"),
    "jobs_per_s_ratio_vs_floor": ("askq", "jobs_per_s", "floor"),
    "cpu_ratio_vs_floor": ("askq", "cpu_ms_per_job", "floor"),
    "bare_cpu_ratio_vs_floor": ("bare", "cpu_ms_per_job", "floor"),
    "ratio_vs_textbook": ("askq", "jobs_per_s", "textbook"),
}


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max of one figure over the rounds."""
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


def load() -> float:
    """The machine's 1-minute load average (0 where the platform has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return 0.0


@dataclass
class Rounds:
    """Every round's figures per design, and the ratios taken within each round."""

    rounds: list[dict[str, Figures]] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)
    # The simulator's CPU per job in each burst: the provider's share of the machine, not a design's.
    sim_pid: int | None = None
    sim_cpu: dict[str, list[float]] = field(default_factory=dict)

    def run(self, designs: list[tuple[Design, int, float]], count: int, say: Callable[[str], None]) -> None:
        """`count` rounds; in each, every (design, jobs, timeout_s) gets one burst of that many jobs.

        Each round starts one design further down the list (A B C, B C A, C A B, ...): measured
        askq against askq, the one that went second used ~2-3 % less CPU, so no design may always
        go first.
        """
        for n in range(count):
            row: dict[str, Figures] = {}
            self.loads.append(load())
            turn = n % len(designs)
            for design, jobs, timeout_s in designs[turn:] + designs[:turn]:
                sim = ProcWatch([self.sim_pid] if self.sim_pid else []).start()
                row[design.name] = f = design.burst(jobs, timeout_s)
                sim_ms = round(sim.stop() * 1000 / max(f.done, 1), 2)
                self.sim_cpu.setdefault(design.name, []).append(sim_ms)
                say(f"round {n + 1}/{count} {design.name}: {f.jobs_per_s} jobs/s, {f.cpu_ms_per_job} ms CPU/job "
                    f"(simulator {sim_ms}), load {load()}")
            self.loads.append(load())
            self.rounds.append(row)

    def names(self) -> list[str]:
        """The designs, askq first, in the order they were given."""
        return sorted(self.rounds[0], key=lambda name: name != "askq") if self.rounds else []

    def ratios(self) -> dict[str, list[float]]:
        """Per-round values of every ratio whose two designs ran."""
        out: dict[str, list[float]] = {}
        for name, (mine, figure, other) in RATIOS.items():
            values = []
            for row in self.rounds:
                if mine in row and other in row:
                    below = getattr(row[other], figure)
                    values.append(getattr(row[mine], figure) / below if below else float("inf"))
            if values:
                out[name] = values
        return out

    def summary(self, design: str) -> dict[str, dict[str, float]]:
        return {f: spread([float(getattr(row[design], f)) for row in self.rounds]) for f in FIGURES}

    def median_figures(self, design: str) -> dict[str, Any]:
        """The design's figures as in one run (the keys `--json` always had), each the median of the rounds."""
        first = self.rounds[0][design].as_dict()
        for f in (*FIGURES, "wall_s", "done"):
            first[f] = statistics.median(getattr(row[design], f) for row in self.rounds)
        first["peak_rss_mb"] = max(row[design].peak_rss_mb for row in self.rounds)
        return first

    def as_dict(self) -> dict[str, Any]:
        ratios = self.ratios()
        return {
            "rounds": [{name: f.as_dict() for name, f in row.items()} for row in self.rounds],
            "summary": {name: self.summary(name) for name in self.names()},
            "ratios": {name: spread(values) for name, values in ratios.items()},
            **{name: round(statistics.median(values), 3) for name, values in ratios.items()},
            "load": {"min": min(self.loads, default=0.0), "max": max(self.loads, default=0.0)},
            "sim_cpu_ms_per_job": {name: spread(values) for name, values in self.sim_cpu.items()},
        }
