"""A process's clock skewed by libfaketime (Debian's `faketime` package), for many-hosts tests.

LD_PRELOAD of libfaketime with FAKETIME="+30s" shifts the wall clock the process reads, the way
a host with a wrong clock sees the time. Children inherit it.
"""

from __future__ import annotations

import glob

# Where Debian and Ubuntu install it (multiarch), and the plain fallbacks.
_PATTERNS = ("/usr/lib/*/faketime/libfaketime.so.1", "/usr/lib/faketime/libfaketime.so.1",
             "/usr/local/lib/faketime/libfaketime.so.1")


def library() -> str | None:
    """The libfaketime shared object, or None when the package is not installed."""
    for pattern in _PATTERNS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def skewed_env(offset_s: float) -> dict[str, str]:
    """Environment that runs a process with its clock offset_s seconds off (ValueError: no libfaketime)."""
    lib = library()
    if lib is None:
        raise ValueError("libfaketime is not installed (apt-get install faketime)")
    # Only the wall clock is wrong on such a host (NTP steps never touch CLOCK_MONOTONIC). A faked
    # monotonic clock would also break every timed wait: libfaketime reports it as an epoch date,
    # and Python's timed lock waits (sem_clockwait) hand that to the kernel as their deadline.
    return {"LD_PRELOAD": lib, "FAKETIME": f"{offset_s:+g}s", "DONT_FAKE_MONOTONIC": "1"}
