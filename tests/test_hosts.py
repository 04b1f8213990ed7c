"""Many hosts in network namespaces: a worker host cut off and healed, clocks 30 s off (small run)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from askq.bench import faketime
from askq.bench.hosts import HostsOptions, run_hosts
from askq.bench.netns import Topology, unavailable

_WHY = unavailable()
pytestmark = [
    pytest.mark.skipif(_WHY is not None, reason=f"network namespaces unavailable here: {_WHY}"),
    pytest.mark.skipif(faketime.library() is None, reason="libfaketime missing: apt-get install faketime"),
]


def _namespaces() -> set[str]:
    return set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())


def test_partition_and_skewed_clocks_lose_nothing_and_run_nothing_twice(tmp_path: Path) -> None:
    before = _namespaces()
    # Small: lease 2 s, cut 6 s. The full run (`askq chaos --hosts`) uses the defaults and 30 s.
    opts = HostsOptions(jobs=12, partition_s=6, latency_s=1.0, concurrency=3, lease_s=2.0, deadline_s=60)
    out = run_hosts(opts, tmp_path)
    failed = {name: c for name, c in out["checks"].items() if not c["passed"]}
    assert not failed, (failed, out["scenarios"])
    assert out["lost"] == 0 and out["duplicates"] == 0
    assert out["scenarios"]["partition"]["held_at_cut"] >= 1
    assert out["scenarios"]["skew"]["reclaimed"] == 0 and out["scenarios"]["skew"]["wasted_calls"] == 0
    # Every namespace (and with it every veth) the run made is gone.
    assert _namespaces() <= before


def test_topology_is_removed_when_the_run_inside_fails() -> None:
    before = _namespaces()
    with pytest.raises(RuntimeError, match="inside"), Topology(hosts=("a",)) as topo:
        assert topo.ns("a") in _namespaces()
        raise RuntimeError("a failure inside the scenario")
    assert _namespaces() <= before
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert topo.tag not in links
