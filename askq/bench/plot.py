"""Throughput and p99 latency of askq against worker concurrency, drawn as a PNG (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def draw(points: list[dict[str, Any]], path: Path) -> None:
    """Throughput (left axis) and p99 (right axis) against jobs in flight, saved as a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [p["concurrency"] for p in points]
    fig, left = plt.subplots(figsize=(7, 4))
    left.plot(xs, [p["jobs_per_s"] for p in points], "o-", color="tab:blue", label="jobs/s")
    left.set_xlabel("jobs in flight (workers x concurrency)")
    left.set_ylabel("throughput, jobs/s", color="tab:blue")
    right = left.twinx()
    right.plot(xs, [p["p99_s"] for p in points], "s--", color="tab:red", label="p99 s")
    right.set_ylabel("p99 end-to-end latency of the burst, s", color="tab:red")
    left.set_title("askq, simulator latency 1 s, 2 cores")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
