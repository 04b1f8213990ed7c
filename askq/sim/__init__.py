"""OpenAI-compatible LLM simulator with injectable faults, for demos, tests and benchmarks."""

from askq.sim.answers import answer_for, count_tokens
from askq.sim.faults import FaultKind, FaultSpec, ModelConfig, SimConfig
from askq.sim.server import build_app, main, start

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
