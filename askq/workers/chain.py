"""The LangChain chain for one provider tier: prompt | ChatOpenAI, asked asynchronously.

ask() raises only ProviderError (the provider or the network failed: see askq/workers/errorclass.py)
or InternalError (askq's own code or the job's own data failed; never the provider's fault).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import openai
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from langchain_openai.chat_models.base import _handle_openai_api_error, _handle_openai_bad_request
from openai._base_client import make_request_options
from openai._constants import RAW_RESPONSE_HEADER
from openai._legacy_response import LegacyAPIResponse
from openai.types.chat import ChatCompletion

from askq.config.settings import ProviderSettings
from askq.core.job import JobSpec, TokenUsage
from askq.errors import (
    BadAnswerError,
    InternalError,
    OversizedError,
    ProviderError,
    TierSkippedError,
    TransientProviderError,
)
from askq.workers.errorclass import classify, unicode_safe
from askq.workers.providerhttp import provider_client, tracking

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


def _system_text(spec: JobSpec, prompt: str) -> str:
    system = _SYSTEM[prompt]
    if spec.context and prompt == "full":
        docs = "\n\n".join(f"[{i + 1}] {doc}" for i, doc in enumerate(spec.context))
        system = f"{system}\n\nContext documents:\n{docs}"
    return system


# A job without context documents shares its template's system message: messages are only
# read (turned into the request's dicts), so one object per template serves every call.
_SYSTEM_MESSAGE = {prompt: SystemMessage(text) for prompt, text in _SYSTEM.items()}
# A payload of only these keys is posted as it is (see Chain._complete).
_PLAIN_PAYLOAD = frozenset({"model", "stream", "messages"})


def build_messages(spec: JobSpec, prompt: str) -> list[BaseMessage]:
    """The chat messages for a job under one of the prompt templates."""
    if spec.context and prompt == "full":
        return [SystemMessage(_system_text(spec, prompt)), HumanMessage(spec.question)]
    return [_SYSTEM_MESSAGE[prompt], HumanMessage(spec.question)]


def prompt_chars(spec: JobSpec, prompt: str) -> int:
    """The characters of build_messages(spec, prompt), without building them."""
    return len(_system_text(spec, prompt)) + len(spec.question)


class Chain:
    """One provider's client, built once per worker process and shared by every in-flight job."""

    def __init__(self, provider: ProviderSettings) -> None:
        self.provider = provider
        # aiohttp as the transport (the SDK's own option): per request it costs about half the CPU
        # of httpx's anyio transport, the largest single cost of a job. Our own connection pool per
        # provider (the SDK's defaults: 1000 connections, keep-alive), rather than LangChain's
        # process-wide cached client, which binds to the first event loop. Guarded: size caps,
        # no redirects (askq/workers/providerhttp.py). Its timeout is aiohttp's per-read timeout, which
        # a trickling provider resets with every byte; ask() puts a deadline on the whole call.
        self.http = provider_client(provider)
        # max_retries=0: askq's retry loop is the only one, so waits are bounded and counted.
        self.llm = ChatOpenAI(
            model=provider.model,
            base_url=provider.base_url,
            api_key=provider.api_key,
            timeout=provider.timeout_s,
            max_retries=0,
            http_async_client=self.http,
        )
        # What ChatOpenAI's with_raw_response.create() passes to post(): bearer auth and the
        # SDK's raw-response marker (sent as a header too, so the request stays the same).
        self._options = make_request_options(extra_headers={RAW_RESPONSE_HEADER: "true"},
                                             security={"bearer_auth": True})

    async def aclose(self) -> None:
        """Close the connection pool (on the loop that used it)."""
        await self.http.aclose()

    async def ask(self, spec: JobSpec) -> Answer:
        name, limit = self.provider.name, self.provider.timeout_s
        messages = build_messages(spec, self.provider.prompt)
        started = time.perf_counter()
        with tracking() as exchange:
            try:
                async with asyncio.timeout(limit):
                    message = await self._complete(messages)
            except (ProviderError, InternalError):
                raise
            except TimeoutError as exc:
                if not exchange.sent:
                    # The request never left: askq's own loop was too busy to send it in time.
                    # Not the provider's timeout, so not counted against it; the tier moves on.
                    raise TierSkippedError(f"request not sent within timeout_s ({limit:g} s)", name) from exc
                raise TransientProviderError(f"no complete response within timeout_s ({limit:g} s)", name) from exc
            except Exception as exc:
                raise classify(exc, name, exchange) from exc
        latency = time.perf_counter() - started
        if not isinstance(message, AIMessage):
            raise InternalError(f"ChatOpenAI returned a {type(message).__name__}, not an AIMessage", name)
        try:
            return self._read(message, latency)
        except ProviderError:
            raise
        except Exception as exc:  # a value the provider sent that is not what a completion holds
            raise classify(exc, name, exchange) from exc

    async def _complete(self, messages: list[BaseMessage]) -> BaseMessage:
        """ChatOpenAI's own request and reply for one call, without its Runnable layers.

        ainvoke() would wrap the same three steps (_agenerate: build the payload, post it with
        the SDK, read the completion) in a callback manager, config merging, a gather() task
        per call and a thread-pool hop for reading the reply: a quarter of a job's CPU for
        nothing askq uses (no callbacks, no tracing, no LangChain cache). What it adds to the
        message is kept: the reply's generation info and llm_output in response_metadata, and
        LangChain's translation of SDK errors (so error texts are the same as through ainvoke).
        """
        llm = self.llm
        payload = llm._get_request_payload(messages)
        try:
            if payload.keys() <= _PLAIN_PAYLOAD and payload.get("stream") is False:
                # create() would run the payload through the SDK's TypedDict transform, which
                # leaves model, stream and string role/content messages as they are but walks
                # every key and type annotation to find that out (a tenth of a job's CPU). The
                # client's own post() sends the same body (tests/test_chainrequest.py).
                raw: LegacyAPIResponse[ChatCompletion] = await llm.root_async_client.post(
                    "/chat/completions", cast_to=ChatCompletion, body=payload, options=self._options)
            else:
                raw = await llm.async_client.with_raw_response.create(**payload)
            response = raw.parse()
        except openai.BadRequestError as exc:
            _handle_openai_bad_request(exc)
            raise
        except openai.APIError as exc:
            _handle_openai_api_error(exc)
            raise
        result = llm._create_chat_result(response)
        generation = result.generations[0]
        message = generation.message
        message.response_metadata = {**(result.llm_output or {}), **(generation.generation_info or {}),
                                     **message.response_metadata}
        return message

    def _read(self, message: AIMessage, latency: float) -> Answer:
        """The answer in a reply, or the BadAnswerError (OversizedError) that says why it is unusable."""
        name = self.provider.name
        finish = message.response_metadata.get("finish_reason")
        text = message.content if isinstance(message.content, str) else ""
        if finish == "length":
            raise BadAnswerError("answer truncated (finish_reason=length)", name)
        if not text.strip():
            raise BadAnswerError("empty answer", name)
        if len(text) > self.provider.max_answer_chars:
            raise OversizedError(f"answer of {len(text)} chars is over max_answer_chars "
                                 f"({self.provider.max_answer_chars})", name)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # JSON can carry a lone surrogate ("\ud800"): no store or client could encode it.
            raise BadAnswerError("answer is not valid Unicode (a lone surrogate)", name) from None
        usage: dict[str, Any] = dict(message.usage_metadata or {})
        return Answer(
            text=text,
            model=unicode_safe(str(message.response_metadata.get("model_name") or self.provider.model))[:200],
            usage=TokenUsage(
                prompt=int(usage.get("input_tokens", 0)),
                completion=int(usage.get("output_tokens", 0)),
                total=int(usage.get("total_tokens", 0)),
            ),
            latency_s=latency,
        )
