"""askq: a resilient LLM job queue. This package is the composition root (CLI, demo, stack)."""

__version__ = "0.1.0"
