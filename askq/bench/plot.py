"""Throughput and p99 latency of askq against worker concurrency, drawn as a PNG (matplotlib, Agg)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from askq.errors import BenchError


def check_path(path: Path) -> None:
    """BenchError unless a PNG can be written at `path`: checked before a run whose plot comes last."""
    shown = f"--plot {str(path)!r}"
    if path.suffix.lower() != ".png":
        raise BenchError(f"{shown}: the plot is a PNG, give a .png path")
    if path.is_dir():
        raise BenchError(f"{shown}: is a directory, give a .png file in it")
    folder = next((p for p in (path.parent, *path.parent.parents) if p.exists()), Path("/"))
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise BenchError(f"{shown}: cannot write there ({folder} is not a writable directory)")


def draw(points: list[dict[str, Any]], path: Path) -> None:
    """Throughput (left axis) and p99 (right axis) against jobs in flight, saved as a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [p["concurrency"] for p in points]
    fig, left = plt.subplots(figsize=(7, 4))
    left.plot(xs, [p["jobs_per_s"] for p in points], "o-", color="tab:blue", label="jobs/s")
    if all("slot_bound_jobs_per_s" in p for p in points):
        left.plot(xs, [p["slot_bound_jobs_per_s"] for p in points], ":", color="tab:gray",
                  label="slot bound (in flight / L)")
        left.legend(loc="upper left")
    left.set_xlabel("jobs in flight, total (workers x concurrency per worker)")
    left.set_ylabel("throughput, jobs/s", color="tab:blue")
    right = left.twinx()
    right.plot(xs, [p["p99_s"] for p in points], "s--", color="tab:red", label="p99 s")
    right.set_ylabel("p99 end-to-end latency of the burst, s", color="tab:red")
    left.set_title("askq, simulator latency 1 s, 2 cores")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def draw_latency(points: list[dict[str, Any]], path: Path, latency_s: float) -> None:
    """Queue wait and askq's overhead (p50, p99) against offered load: the open loop's hockey stick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(points, key=lambda p: p["offered_load_ratio"])
    xs = [p["offered_load_ratio"] * 100 for p in ordered]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, style, label in (("overhead_p50_ms", "o-", "overhead p50"), ("overhead_p99_ms", "s-", "overhead p99"),
                              ("wait_p99_ms", "^--", "queue wait p99")):
        ax.plot(xs, [p[key] for p in ordered], style, label=label)
    ax.set_xlabel("offered load, % of the capacity measured in the same run")
    ax.set_ylabel("ms (overhead = end-to-end - provider latency)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title(f"askq open loop (Poisson arrivals), simulator latency {latency_s:g} s")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
