"""Standard Webhooks signing and the callback allow-list: what a receiver checks, what askq may call.

A delivery carries `webhook-id` (the same on every attempt of one job's terminal event),
`webhook-timestamp` (this attempt's, in epoch seconds) and `webhook-signature`:
`v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")), key being the base64 part of the
`whsec_...` secret (https://www.standardwebhooks.com). The secret itself is never part of
anything this module returns but the signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from askq.core.job import CALLBACK_URL_MAX_CHARS, JobRequest
from askq.errors import InvalidJobError


def signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value for one attempt."""
    mac = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def headers(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header a delivery attempt sends."""
    return {
        "content-type": "application/json",
        "user-agent": "askq-callbacks",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, webhook_id, timestamp, body),
    }


def _host(url: str) -> str:
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(host))  # one spelling per address (e.g. IPv6 zeros)
    except ValueError:
        return host


def host_allowed(url: str, allowed_hosts: Sequence[str]) -> bool:
    """Whether the URL's host is one of allowed_hosts (exact, or under a `*.domain` entry)."""
    host = _host(url)
    for entry in allowed_hosts:
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and len(host) > len(entry) - 1:
                return True
        elif host == _host(f"http://{entry if ':' not in entry else f'[{entry}]'}/"):
            return True
    return False


def where(url: str) -> str:
    """scheme://host[:port] of a URL: what logs and errors show. Never its userinfo, path or query,
    which may hold a credential or a token (a URL that came in around the submission checks)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{f'[{host}]' if ':' in host else host}{port}"


def check_callback(request: JobRequest, allowed_hosts: Sequence[str]) -> None:
    """Refuse a job whose callback_url names a host outside the allow-list (InvalidJobError)."""
    url = request.callback_url
    if url is None:
        return
    if not allowed_hosts:
        raise InvalidJobError("callback_url: callbacks are not enabled here (callbacks.allowed_hosts is empty)")
    if not host_allowed(url, allowed_hosts):
        raise InvalidJobError(f"callback_url: host {_host(url)[:100]!a} is not in callbacks.allowed_hosts")


def callback_url_schema(allowed_hosts: Sequence[str]) -> dict[str, Any]:
    """The JSON schema of callback_url for a server with this allow-list (a subset of what is
    accepted: host names and IPv4 addresses, ports up to 9999), so generated jobs are accepted."""
    if not allowed_hosts:
        return {"type": "null", "description": "callbacks are not enabled here (callbacks.allowed_hosts is empty)"}
    hosts = []
    for entry in allowed_hosts:
        if ":" in entry:
            continue  # IPv6 literals are accepted, not described
        if entry.startswith("*."):
            hosts.append("[a-z0-9]([a-z0-9-]*[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*" + _literal(entry[1:]))
        else:
            hosts.append(_literal(entry))
    if not hosts:
        return {"type": "null", "description": "only IPv6 hosts are allowed; they are not described here"}
    pattern = f"^[Hh][Tt][Tt][Pp][Ss]?://({'|'.join(hosts)})(:[1-9][0-9]{{0,3}})?([/?][!$-\\[\\]-~]*)?$"
    return {"anyOf": [{"type": "string", "maxLength": CALLBACK_URL_MAX_CHARS, "pattern": pattern}, {"type": "null"}],
            "default": None,
            "description": f"POSTed the job's view, signed, once it ends; hosts: {', '.join(allowed_hosts)}"}


def _literal(host: str) -> str:
    # Host entries hold only [a-z0-9.-]: the dot is the one character to escape (the same in ECMA-262).
    return host.replace(".", "\\.")
