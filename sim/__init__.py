"""OpenAI-compatible LLM simulator with injectable faults, for demos, tests and benchmarks."""

from sim.answers import answer_for, count_tokens
from sim.faults import FaultKind, FaultSpec, ModelConfig, SimConfig
from sim.server import build_app, main, start

__all__ = [
    "FaultKind",
    "FaultSpec",
    "ModelConfig",
    "SimConfig",
    "answer_for",
    "build_app",
    "count_tokens",
    "main",
    "start",
]
