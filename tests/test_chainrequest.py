"""askq's provider call sends exactly the request ChatOpenAI.ainvoke would, and fails the same way.

Chain._complete (askq/workers/chain.py) calls ChatOpenAI below its Runnable layers and posts
the payload without the SDK's TypedDict transform, to save CPU per job. What a provider sees
must not change: both requests land on a real HTTP receiver on loopback and are compared
byte for byte, for every prompt template, with and without context documents, and with text
the JSON encoder escapes.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from askq.config.settings import ProviderSettings
from askq.core.job import JobSpec
from askq.errors import ProviderError
from askq.workers.chain import Chain, build_messages
from askq.workers.errorclass import classify
from askq.workers.providerhttp import tracking
from tests.receiver import Received, receiving

SPECS = [
    JobSpec.new("Where is my parcel?"),
    JobSpec.new("Où est mon colis ? \u00e9\u4e2d \"quoted\" \\ back\nslash", ["doc one", "d\u00f6c \u2603 two"]),
]
# Headers the SDK sets per request on purpose (a fresh id, the retry count): not compared.
_PER_REQUEST = {"x-stainless-retry-count", "x-stainless-read-timeout", "idempotency-key", "content-length"}


def _headers(received: Received) -> dict[str, str]:
    return {k: v for k, v in received.headers.items() if k not in _PER_REQUEST}


@pytest.mark.parametrize("prompt", ["full", "short"])
@pytest.mark.parametrize("spec", SPECS, ids=["plain", "context"])
def test_request_is_what_ainvoke_sends(prompt: str, spec: JobSpec) -> None:
    # 200 with a body that is not a completion: both paths must also fail alike.
    with receiving([(200, {"content-type": "application/json"})]) as receiver:
        provider = ProviderSettings(name="p", base_url=receiver.url + "/v1", model="m-1", prompt=prompt,
                                    timeout_s=10)

        async def both() -> tuple[ProviderError, ProviderError]:
            chain = Chain(provider)
            try:
                with pytest.raises(ProviderError) as ours:
                    await chain.ask(spec)
                with tracking() as exchange, pytest.raises(Exception) as theirs:
                    await chain.llm.ainvoke(build_messages(spec, prompt))
                reference = classify(theirs.value, provider.name, exchange)
                assert isinstance(reference, ProviderError)
                return ours.value, reference
            finally:
                await chain.aclose()

        ours, reference = asyncio.run(both())
        sent = receiver.requests()
    assert len(sent) == 2
    mine, langchain = sent
    assert (mine.path, mine.body) == (langchain.path, langchain.body)
    assert _headers(mine) == _headers(langchain)
    body = json.loads(mine.body)
    assert body["model"] == "m-1" and body["messages"][-1] == {"content": spec.question, "role": "user"}
    assert (type(ours), ours.error_class) == (type(reference), reference.error_class)
