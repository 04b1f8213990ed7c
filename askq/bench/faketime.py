"""A process's clock skewed by libfaketime (Debian's `faketime` package), for many-hosts tests.

LD_PRELOAD of libfaketime with FAKETIME="+30s" shifts every clock the process reads (wall and
monotonic), the way a host with a wrong clock would see the time. Children inherit it.
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
    # DONT_FAKE_MONOTONIC stays unset: a skewed host's monotonic clock is as wrong as its wall clock.
    return {"LD_PRELOAD": lib, "FAKETIME": f"{offset_s:+g}s", "FAKETIME_NO_CACHE": "1"}
