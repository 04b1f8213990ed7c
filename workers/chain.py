"""The LangChain chain for one provider tier: prompt | ChatOpenAI, asked asynchronously."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import openai
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

from config.settings import ProviderSettings
from core.errors import BadAnswerError
from core.job import JobSpec, TokenUsage

_SYSTEM = {
    "full": (
        "You are a helpful customer-service assistant. Answer the customer's question clearly and "
        "politely, using the context documents when they are relevant."
    ),
    "short": "Answer the customer's question in one or two sentences.",
}


@dataclass(frozen=True, slots=True)
class Answer:
    """What a tier produced."""

    text: str
    model: str
    usage: TokenUsage
    latency_s: float


def build_messages(spec: JobSpec, prompt: str) -> list[BaseMessage]:
    """The chat messages for a job under one of the prompt templates."""
    system = _SYSTEM[prompt]
    if spec.context and prompt == "full":
        docs = "\n\n".join(f"[{i + 1}] {doc}" for i, doc in enumerate(spec.context))
        system = f"{system}\n\nContext documents:\n{docs}"
    return [SystemMessage(system), HumanMessage(spec.question)]


def prompt_chars(spec: JobSpec, prompt: str) -> int:
    return sum(len(str(m.content)) for m in build_messages(spec, prompt))


class Chain:
    """One provider's client, built once per worker process and shared by every in-flight job."""

    def __init__(self, provider: ProviderSettings) -> None:
        self.provider = provider
        # aiohttp as the transport (the SDK's own option): per request it costs about half the CPU
        # of httpx's anyio transport, the largest single cost of a job. Our own connection pool per
        # provider (the SDK's defaults: 1000 connections, keep-alive), rather than LangChain's
        # process-wide cached client, which binds to the first event loop.
        self.http = openai.DefaultAioHttpClient(timeout=provider.timeout_s)
        # max_retries=0: askq's retry loop is the only one, so waits are bounded and counted.
        self.llm = ChatOpenAI(
            model=provider.model,
            base_url=provider.base_url,
            api_key=provider.api_key,
            timeout=provider.timeout_s,
            max_retries=0,
            http_async_client=self.http,
        )

    async def aclose(self) -> None:
        """Close the connection pool (on the loop that used it)."""
        await self.http.aclose()

    async def ask(self, spec: JobSpec) -> Answer:
        started = time.perf_counter()
        message = await self.llm.ainvoke(build_messages(spec, self.provider.prompt))
        latency = time.perf_counter() - started
        assert isinstance(message, AIMessage)
        finish = message.response_metadata.get("finish_reason")
        text = message.content if isinstance(message.content, str) else ""
        if finish == "length":
            raise BadAnswerError("answer truncated (finish_reason=length)", self.provider.name)
        if not text.strip():
            raise BadAnswerError("empty answer", self.provider.name)
        usage: dict[str, Any] = dict(message.usage_metadata or {})
        return Answer(
            text=text,
            model=str(message.response_metadata.get("model_name") or self.provider.model),
            usage=TokenUsage(
                prompt=int(usage.get("input_tokens", 0)),
                completion=int(usage.get("output_tokens", 0)),
                total=int(usage.get("total_tokens", 0)),
            ),
            latency_s=latency,
        )
