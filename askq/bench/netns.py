"""Hosts on one machine: Linux network namespaces joined to a hub by veth pairs.

The hub namespace holds Redis and the LLM simulator (the "server" host); each other host has
its own namespace and one veth link to the hub, on its own private /24 (10.250.N.0/24: the
hub is .1, the host .2). The root namespace gets one more link to the hub, so the harness can
read Redis and nothing else; no namespace has a route anywhere else. Partitioning a host takes
its link down on the hub side (`ip link set down`): its packets are dropped, its TCP
connections stall, and they resume when the link comes back up.

Names are unique per run (a prefix with the pid and a random tag), and `close()` deletes every
namespace it made (which deletes their veths), so a failed run leaves nothing behind.
Needs root and iproute2.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field

SUBNET = "10.250"
# The root namespace's link to the hub (the harness's view of Redis).
OBSERVER = "obs"


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be made here (not root, no iproute2, or a sandbox forbids it)."""


def unavailable() -> str | None:
    """Why network namespaces cannot be used here, or None when they can (tries one for real)."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` command is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"aqprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise NetnsUnavailable(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass
class Topology:
    """A hub namespace and host namespaces around it; `close()` removes them all."""

    hosts: tuple[str, ...]
    tag: str = field(default_factory=lambda: f"aq{os.getpid() % 100000}{secrets.token_hex(2)}")
    made: list[str] = field(default_factory=list)
    root_links: list[str] = field(default_factory=list)

    def ns(self, host: str) -> str:
        return f"{self.tag}-{host}"

    def _veth(self, host: str, side: str) -> str:
        # Interface names are at most 15 characters: tag (<= 11) + index + side.
        return f"{self.tag}{self._index(host)}{side}"

    def _index(self, host: str) -> int:
        return (self.hosts.index(host) + 1) if host != OBSERVER else 99

    def hub_address(self, host: str) -> str:
        """The hub's address as seen from host."""
        return f"{SUBNET}.{self._index(host)}.1"

    def address(self, host: str) -> str:
        return f"{SUBNET}.{self._index(host)}.2"

    def open(self) -> Topology:
        try:
            self._add_ns("hub")
            _ip("-n", self.ns("hub"), "link", "set", "lo", "up")
            for host in self.hosts:
                self._add_ns(host)
                _ip("-n", self.ns(host), "link", "set", "lo", "up")
                self._link(host, self.ns(host))
            self._link(OBSERVER, None)
        except BaseException:
            self.close()
            raise
        return self

    def _add_ns(self, host: str) -> None:
        _ip("netns", "add", self.ns(host))
        self.made.append(self.ns(host))

    def _link(self, host: str, netns: str | None) -> None:
        hub_end, host_end = self._veth(host, "h"), self._veth(host, "x")
        _ip("link", "add", hub_end, "type", "veth", "peer", "name", host_end)
        if netns is None:
            self.root_links.append(host_end)
        _ip("link", "set", hub_end, "netns", self.ns("hub"))
        _ip("-n", self.ns("hub"), "addr", "add", f"{self.hub_address(host)}/24", "dev", hub_end)
        _ip("-n", self.ns("hub"), "link", "set", hub_end, "up")
        if netns is None:
            _ip("addr", "add", f"{self.address(host)}/24", "dev", host_end)
            _ip("link", "set", host_end, "up")
        else:
            _ip("link", "set", host_end, "netns", netns)
            _ip("-n", netns, "addr", "add", f"{self.address(host)}/24", "dev", host_end)
            _ip("-n", netns, "link", "set", host_end, "up")

    def run_in(self, host: str) -> list[str]:
        """Command prefix that runs a program inside host's namespace."""
        return ["ip", "netns", "exec", self.ns(host)]

    def partition(self, host: str) -> None:
        """Cut host off: its link goes down on the hub side, so every packet either way is lost."""
        _ip("-n", self.ns("hub"), "link", "set", self._veth(host, "h"), "down")

    def heal(self, host: str) -> None:
        _ip("-n", self.ns("hub"), "link", "set", self._veth(host, "h"), "up")

    def close(self) -> None:
        """Delete every namespace made (their veths go with them) and the root's own link.

        Processes still inside keep a deleted namespace alive until they exit: stop them first.
        """
        for link in self.root_links:
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        self.root_links.clear()
        for name in reversed(self.made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.made.clear()

    def __enter__(self) -> Topology:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
