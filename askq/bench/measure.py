"""What a benchmark measures about processes and jobs: CPU, peak memory, latency percentiles."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psutil


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@dataclass
class ProcWatch:
    """CPU (user+sys, from the kernel's accounting) and peak RSS of worker processes and their children.

    start() snapshots CPU, a sampler thread keeps the peak RSS per process, stop() returns the
    CPU spent in between. Children (prefork pool processes) count towards their worker.
    """

    pids: list[int]
    interval_s: float = 0.2
    peak_rss: dict[int, int] = field(default_factory=dict)
    _cpu0: dict[int, float] = field(default_factory=dict)
    _cpu_last: dict[int, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _sample(self) -> None:
        for pid in self.pids:
            rss = 0
            for proc in _tree(pid):
                try:
                    with proc.oneshot():
                        rss += proc.memory_info().rss
                        t = proc.cpu_times()
                        self._cpu_last[proc.pid] = t.user + t.system
                except psutil.NoSuchProcess:
                    continue
            self.peak_rss[pid] = max(self.peak_rss.get(pid, 0), rss)

    def start(self) -> ProcWatch:
        self._sample()
        self._cpu0 = dict(self._cpu_last)

        def loop() -> None:
            while not self._stop.wait(self.interval_s):
                self._sample()

        self._thread = threading.Thread(target=loop, name="procwatch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> float:
        """Stop sampling; CPU seconds spent by the watched processes since start()."""
        self._stop.set()
        if self._thread:
            self._thread.join()
        self._sample()
        return sum(v - self._cpu0.get(pid, 0.0) for pid, v in self._cpu_last.items())

    def peak_rss_mb(self) -> float:
        """The largest peak RSS of any one watched worker (with its children), in MiB."""
        return round(max(self.peak_rss.values(), default=0) / 2**20, 1)


def wait_until(predicate: object, timeout_s: float, interval_s: float = 0.1) -> bool:
    """Poll a zero-argument callable until it is truthy; False on timeout."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return False
