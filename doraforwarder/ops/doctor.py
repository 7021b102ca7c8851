"""``doraforwarder doctor``: check every dependency the configuration names.

Each check answers one question an operator asks when the dashboards stay
empty ("can it watch?", "does DevLake take the token?", "does the connection
exist?") with a pass/fail line and a hint that says what to do. Required
checks decide the exit code; warnings (no Redis persistence, no GitHub token)
do not.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import httpx
import redis.asyncio as aioredis

from doraforwarder.config import LoadedConfig
from doraforwarder.devlake.routing import global_target, target_url, team_target
from doraforwarder.keys import Keys
from doraforwarder.outbox import Target
from doraforwarder.storage import connect

Outcome = Literal["pass", "fail", "warn", "skip"]


@dataclass(frozen=True)
class Check:
    name: str
    outcome: Outcome
    detail: str
    hint: str = ""

    @property
    def failed(self) -> bool:
        return self.outcome == "fail"


KubeProbe = Callable[[LoadedConfig], Awaitable[list[Check]]]


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def check_redis(config: LoadedConfig) -> list[Check]:
    redis_config = config.settings.storage.redis
    shown = redis_config.display_url()
    client: aioredis.Redis = connect(redis_config)
    try:
        try:
            await client.ping()
        except Exception as exc:
            return [Check("redis reachable", "fail", f"{shown}: {_error_text(exc)}",
                          "start Redis or fix storage.redis.address / REDIS_HOST / REDIS_PASSWORD")]
        checks = [Check("redis reachable", "pass", shown)]
        probe = Keys(redis_config.keyspace).lock(f"doctor:{uuid.uuid4().hex}")
        try:
            await client.set(probe, "1", px=10_000)
            await client.delete(probe)
            checks.append(Check("redis writable", "pass", "SET and DEL succeeded"))
        except Exception as exc:
            checks.append(Check("redis writable", "fail", _error_text(exc),
                                "the daemon needs write access (read-only replica?)"))
        checks.append(await _redis_persistence(client))
        return checks
    finally:
        await client.aclose()


async def _redis_persistence(client: aioredis.Redis) -> Check:
    name = "redis persistence"
    hint = "enable appendonly (AOF) so state, dedupe keys and the outbox survive a Redis restart"
    try:
        info = await client.info("persistence")
        aof = int(info.get("aof_enabled", 0)) == 1
        config = await client.config_get("save")
        rdb = bool(str(config.get("save", "")).strip())
    except Exception as exc:
        return Check(name, "warn", f"cannot read persistence settings ({_error_text(exc)})", hint)
    if aof:
        return Check(name, "pass", "AOF enabled")
    if rdb:
        return Check(name, "warn", "RDB snapshots only: the last minutes can be lost", hint)
    return Check(name, "warn", "no persistence: a Redis restart forgets everything", hint)


async def check_devlake(config: LoadedConfig, client: httpx.AsyncClient) -> list[Check]:
    devlake = config.settings.integration.devlake
    if not devlake.enabled:
        return [Check("devlake", "skip", "integration.devlake.enabled is false")]
    token = config.secrets.devlake_webhook_token
    if token is None:
        return [Check("devlake token", "fail", "DEVLAKE_WEBHOOK_TOKEN is not set",
                      "create a DevLake API key and set DEVLAKE_WEBHOOK_TOKEN (or _FILE)")]
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"}
    targets: dict[str, Target] = {}
    for target in [global_target(devlake), *map(team_target, devlake.teams)]:
        targets.setdefault(target.key, target)
    checks: list[Check] = []
    for target in targets.values():
        checks.append(await _check_target(devlake.base_url, devlake.api_prefix, target,
                                          client, headers))
        if checks[-1].outcome == "fail" and "token" in checks[-1].name:
            break
    return checks


async def _check_target(base_url: str, api_prefix: str, target: Target,
                        client: httpx.AsyncClient, headers: dict[str, str]) -> Check:
    label = f"devlake {target.team} target ({target.kind.replace('_', ' ')} {target.value})"
    url = target_url(base_url, api_prefix, target)
    try:
        answer = await client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        return Check("devlake reachable", "fail", f"{base_url}: {_error_text(exc)}",
                     "check integration.devlake.base_url and the network policy")
    if answer.status_code in (401, 403):
        return Check("devlake token", "fail", f"DevLake answered {answer.status_code}",
                     "DEVLAKE_WEBHOOK_TOKEN is wrong or expired: create a new API key")
    if answer.status_code == 404:
        what = "project" if target.kind == "project_name" else "webhook connection"
        return Check(label, "fail", f"no such {what}",
                     f"create the {what} in DevLake, or fix the configured "
                     f"{'project_name' if target.kind == 'project_name' else target.kind}")
    if answer.status_code >= 400:
        return Check(label, "fail", f"DevLake answered {answer.status_code}",
                     "check api_prefix: /api/rest through config-ui, /api on the server")
    hint = "" if target.kind == "project_name" else (
        "make sure the connection is attached to a project, or its data stays off the dashboards"
    )
    return Check(label, "pass", "exists", hint)


async def check_github(config: LoadedConfig, client: httpx.AsyncClient) -> list[Check]:
    github = config.settings.github
    token = config.secrets.github_token
    headers = {"Accept": "application/vnd.github+json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token.get_secret_value()}"
    url = github.api_url.rstrip("/") + "/rate_limit"
    try:
        answer = await client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        return [Check("github reachable", "fail", f"{github.api_url}: {_error_text(exc)}",
                      "check github.api_url and the network policy")]
    if answer.status_code == 401:
        return [Check("github token", "fail", "GitHub rejected GITHUB_TOKEN (401)",
                      "create a new token (read-only: contents, metadata)")]
    if answer.status_code >= 400:
        return [Check("github reachable", "fail", f"GitHub answered {answer.status_code}",
                      "check github.api_url (GitHub Enterprise: https://HOST/api/v3)")]
    remaining = answer.headers.get("X-RateLimit-Remaining", "?")
    limit = answer.headers.get("X-RateLimit-Limit", "?")
    if token is None:
        return [Check("github token", "warn", f"unauthenticated: {remaining}/{limit} requests left",
                      "set GITHUB_TOKEN: unauthenticated clients get 60 requests an hour")]
    return [Check("github token", "pass", f"accepted; {remaining}/{limit} requests left")]


async def check_webrca(config: LoadedConfig, client: httpx.AsyncClient) -> list[Check]:
    webrca = config.settings.webrca
    if not webrca.enabled:
        return [Check("webrca", "skip", "webrca.enabled is false")]
    token = config.secrets.offline_token
    if token is None:
        return [Check("webrca token", "fail", "OFFLINE_TOKEN is not set",
                      "get an offline token for Red Hat SSO and set OFFLINE_TOKEN (or _FILE)")]
    form = {"grant_type": "refresh_token", "client_id": webrca.client_id,
            "refresh_token": token.get_secret_value()}
    try:
        answer = await client.post(webrca.token_url, data=form)
    except httpx.HTTPError as exc:
        return [Check("webrca token exchange", "fail", f"{webrca.token_url}: {_error_text(exc)}",
                      "check webrca.token_url and the network policy")]
    if answer.status_code == 400 and "invalid_grant" in answer.text:
        return [Check("webrca token exchange", "fail", "SSO rejected OFFLINE_TOKEN (invalid_grant)",
                      "the offline token expired or was revoked: get a new one")]
    if answer.status_code >= 400:
        return [Check("webrca token exchange", "fail", f"SSO answered {answer.status_code}",
                      "check webrca.token_url and webrca.client_id")]
    return [Check("webrca token exchange", "pass", "access token issued")]


async def run_checks(config: LoadedConfig, kube_probe: KubeProbe | None = None) -> list[Check]:
    """Every check the configuration calls for, in the order an operator fixes them."""
    checks = [Check("configuration", "pass", f"{config.source} is valid")]
    if config.settings.argocd.enabled:
        if kube_probe is None:
            from doraforwarder.ops.probes import probe_kubernetes

            kube_probe = probe_kubernetes
        checks += await kube_probe(config)
    else:
        checks.append(Check("kubernetes", "skip", "argocd.enabled is false"))
    checks += await check_redis(config)
    timeout = httpx.Timeout(10.0)
    async with httpx.AsyncClient(timeout=timeout) as client:
        results = await asyncio.gather(
            check_devlake(config, client), check_github(config, client),
            check_webrca(config, client),
        )
    for group in results:
        checks += group
    return checks


SYMBOLS: dict[Outcome, str] = {"pass": "PASS", "fail": "FAIL", "warn": "WARN", "skip": "SKIP"}


def render(checks: list[Check], started: float | None = None) -> str:
    width = max(len(check.name) for check in checks)
    lines = []
    for check in checks:
        line = f"{SYMBOLS[check.outcome]}  {check.name.ljust(width)}  {check.detail}"
        if check.hint and check.outcome != "pass":
            line += f"\n      hint: {check.hint}"
        lines.append(line)
    failed = sum(check.failed for check in checks)
    warned = sum(check.outcome == "warn" for check in checks)
    took = f" in {time.monotonic() - started:.1f}s" if started is not None else ""
    lines.append(f"{len(checks)} checks{took}: {failed} failed, {warned} warnings")
    return "\n".join(lines)
