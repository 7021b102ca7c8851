"""Everything around the daemon, on this machine: Redis and fakes of every API.

:class:`FakeWorld` starts a real ``redis-server`` (when installed) and the
fakes of Kubernetes, GitHub, WebRCA (with SSO) and DevLake, then writes a
configuration file and a kubeconfig pointing the daemon at them. The demo
runs the daemon in-process against it; the end-to-end suite runs the real
``doraforwarder run`` process against it.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr

from doraforwarder.config import LoadedConfig, Secrets, validate_settings
from doraforwarder.testing.fake_devlake import FakeDevLake
from doraforwarder.testing.fake_github import FakeGitHub
from doraforwarder.testing.fake_kube import FakeKube
from doraforwarder.testing.fake_webrca import FakeWebRCA
from doraforwarder.testing.redis_server import RedisServer

GITHUB_TOKEN = "fake-github-token-world-0000"
DEVLAKE_TOKEN = "devlake-world-api-key-0000"
OFFLINE_TOKEN = "offline-world-token-0000"
KUBE_TOKEN = "kube-world-token-0000"


def deep_merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied recursively (mappings merge, the rest replaces)."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class FakeWorld:
    """Redis plus the four fakes, and the configuration that joins them to the daemon."""

    def __init__(
        self,
        directory: Path,
        *,
        redis_appendonly: bool = True,
        start_redis: bool = True,
        connections: Mapping[int, str] | None = None,
    ) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.redis: RedisServer | None = None
        if start_redis and shutil.which("redis-server"):
            self.redis = RedisServer(appendonly=redis_appendonly,
                                     directory=str(self.directory / "redis"))
            (self.directory / "redis").mkdir(exist_ok=True)
        self.kube = FakeKube(token=KUBE_TOKEN)
        self.github = FakeGitHub(token=GITHUB_TOKEN)
        self.webrca = FakeWebRCA((OFFLINE_TOKEN,))
        self.devlake = FakeDevLake(
            token=DEVLAKE_TOKEN,
            connections=connections if connections is not None else {1: "global"},
        )
        self.kubeconfig = self.directory / "kubeconfig.yaml"

    def start(self) -> FakeWorld:
        if self.redis is not None:
            self.redis.start()
        self.kube.start()
        self.kube.write_kubeconfig(self.kubeconfig, token=KUBE_TOKEN)
        self.github.start()
        self.webrca.start()
        self.devlake.start()
        return self

    def close(self) -> None:
        for part in (self.devlake, self.webrca, self.github, self.kube):
            with contextlib.suppress(Exception):  # closing the rest matters more
                part.close()
        if self.redis is not None:
            self.redis.close()

    def __enter__(self) -> FakeWorld:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret of this world, for tests that grep logs for leaks."""
        return (GITHUB_TOKEN, DEVLAKE_TOKEN, OFFLINE_TOKEN, KUBE_TOKEN)

    def environment(self) -> dict[str, str]:
        """The token variables the daemon reads."""
        return {
            "GITHUB_TOKEN": GITHUB_TOKEN,
            "DEVLAKE_WEBHOOK_TOKEN": DEVLAKE_TOKEN,
            "OFFLINE_TOKEN": OFFLINE_TOKEN,
        }

    def settings(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A complete configuration document for this world, with ``overrides`` merged in."""
        redis_address = self.redis.address if self.redis is not None else "127.0.0.1:6379"
        base: dict[str, Any] = {
            "server": {"port": "0", "host": "127.0.0.1", "shutdown_timeout": "10s",
                       "log_level": "info"},
            "argocd": {
                "enabled": True,
                "namespaces": ["argocd"],
                "known_clusters": [],
                "kubeconfig": str(self.kubeconfig),
                "health_timeout": "30s",
                "watch_timeout": "30s",
            },
            "github": {"api_url": self.github.url, "initial_backoff": "100ms",
                       "max_backoff": "2s"},
            "webrca": {
                "enabled": True,
                "api_url": self.webrca.api_url,
                "token_url": self.webrca.token_url,
                "interval": "5s",
                "products": [],
            },
            "storage": {"redis": {"address": redis_address, "key_prefix": "dora-metrics"}},
            "integration": {
                "devlake": {
                    "enabled": True,
                    "base_url": self.devlake.url,
                    "project_id": "1",
                    "teams": [],
                }
            },
            "delivery": {"initial_backoff": "100ms", "max_backoff": "2s", "claim_idle": "5s"},
        }
        return deep_merge(base, overrides or {})

    def config(self, overrides: Mapping[str, Any] | None = None) -> LoadedConfig:
        """What the daemon runs with in this world, built from values.

        No file and no environment: the tokens are handed over as secrets, so
        the process environment neither leaks in nor has to be patched.
        """
        settings = validate_settings(self.settings(overrides), "the fake world")
        secrets = Secrets(github_token=SecretStr(GITHUB_TOKEN),
                          devlake_webhook_token=SecretStr(DEVLAKE_TOKEN),
                          offline_token=SecretStr(OFFLINE_TOKEN))
        return LoadedConfig(settings=settings, secrets=secrets, source="the fake world")

    def write_config(self, overrides: Mapping[str, Any] | None = None,
                     name: str = "config.yaml") -> Path:
        path = self.directory / name
        path.write_text(yaml.safe_dump(self.settings(overrides), sort_keys=False))
        return path
