"""State shared by the simulator's handlers: the live config, random sources and counters."""

import random
from dataclasses import dataclass, field

from aiohttp import web

from askq.sim.faults import SimConfig
from askq.sim.stats import Stats

# Bounds the model list a client can grow by asking for made-up names.
MAX_SEEN_MODELS = 1000


@dataclass
class SimState:
    """Everything the handlers share: current config, random sources and counters."""

    config: SimConfig
    stats: Stats = field(default_factory=Stats)
    # Separate sources so latency jitter does not shift the fault draws.
    fault_rng: random.Random = field(default_factory=random.Random)
    jitter_rng: random.Random = field(default_factory=random.Random)
    seen_models: set[str] = field(default_factory=set)

    def reseed(self) -> None:
        """Restart the random sequences from the configured seed, if there is one."""
        if self.config.seed is not None:
            self.fault_rng.seed(self.config.seed)
            self.jitter_rng.seed(self.config.seed + 1)

    def saw_model(self, model: str) -> None:
        """Remember a model name a client asked for, so `/v1/models` can list it."""
        if len(self.seen_models) < MAX_SEEN_MODELS:
            self.seen_models.add(model)


STATE = web.AppKey("sim_state", SimState)
