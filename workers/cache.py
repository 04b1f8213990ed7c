"""The answer cache: exact match on the normalised question, context and prompt version."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

import redis.asyncio as aredis

from core import keys
from core.job import JobSpec

_SPACES = re.compile(r"\s+")


def cache_key(spec: JobSpec, prompt_version: str) -> str:
    """Redis key for a job's answer: the same question asked again, any case or spacing, hits."""
    question = _SPACES.sub(" ", spec.question).strip().casefold()
    material = json.dumps([prompt_version, question, spec.context], separators=(",", ":"))
    return keys.cache(hashlib.sha256(material.encode()).hexdigest())


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    answer: str
    provider: str
    model: str | None


class AnswerCache:
    """Answers from successful provider calls, kept for ttl_s."""

    def __init__(self, client: aredis.Redis, ttl_s: int, prompt_version: str) -> None:
        self.redis = client
        self.ttl_s = ttl_s
        self.prompt_version = prompt_version

    async def get(self, spec: JobSpec) -> CachedAnswer | None:
        raw = await self.redis.get(cache_key(spec, self.prompt_version))
        if raw is None:
            return None
        data = json.loads(raw)
        return CachedAnswer(answer=data["answer"], provider=data["provider"], model=data.get("model"))

    async def put(self, spec: JobSpec, answer: str, provider: str, model: str | None) -> None:
        value = json.dumps({"answer": answer, "provider": provider, "model": model})
        await self.redis.set(cache_key(spec, self.prompt_version), value, ex=self.ttl_s)
