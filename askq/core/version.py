"""askq's version, in one place: the package metadata, `askq --version` and `askq_build_info` read it."""

from __future__ import annotations

import platform
from importlib import metadata

VERSION = "0.2.0"
# Libraries whose versions decide how a worker behaves; shown by askq_build_info.
LIBRARIES = ("celery", "kombu", "redis", "langchain-openai", "openai")


def build_info() -> dict[str, str]:
    """askq's version, Python's and the libraries' that matter, as label values."""
    info = {"version": VERSION, "python": platform.python_version()}
    for name in LIBRARIES:
        try:
            info[name.replace("-", "_")] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name.replace("-", "_")] = "absent"
    return info
