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

import httpx
import redis.asyncio as aioredis
from pydantic import SecretStr

from doraforwarder.commits.github import GitHubClient
from doraforwarder.config import LoadedConfig
from doraforwarder.context import AppContext
from doraforwarder.devlake.client import DevLakeClient
from doraforwarder.devlake.routing import global_target, target_url, team_target
from doraforwarder.keys import Keys
from doraforwarder.ops.checks import Check, Outcome
from doraforwarder.ops.checks import error_text as _error_text
from doraforwarder.ops.probes import probe_kubernetes
from doraforwarder.outbox import Target
from doraforwarder.storage import connect
from doraforwarder.webrca.client import TokenRejected, TokenSource, TransientError, webrca_http

__all__ = ["Check", "Outcome", "render", "run_checks"]

KubeProbe = Callable[[LoadedConfig], Awaitable[list[Check]]]


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


def _not_checkable(part: str, switch: str, enabled: bool, token: SecretStr | None,
                   variable: str, hint: str) -> list[Check]:
    """Why ``part`` cannot be checked (switched off, or its token missing); [] when it can."""
    if not enabled:
        return [Check(part, "skip", f"{switch} is false")]
    if token is None:
        return [Check(f"{part} token", "fail", f"{variable} is not set", hint)]
    return []


async def check_devlake(config: LoadedConfig) -> list[Check]:
    devlake = config.settings.integration.devlake
    token = config.secrets.devlake_webhook_token
    blocked = _not_checkable(
        "devlake", "integration.devlake.enabled", devlake.enabled, token, "DEVLAKE_WEBHOOK_TOKEN",
        "create a DevLake API key and set DEVLAKE_WEBHOOK_TOKEN (or _FILE)")
    if blocked:
        return blocked
    targets: dict[str, Target] = {}
    for target in [global_target(devlake), *map(team_target, devlake.teams)]:
        targets.setdefault(target.key, target)
    checks: list[Check] = []
    client = DevLakeClient(token, devlake.timeout_seconds)
    try:
        for target in targets.values():
            checks.append(await _check_target(devlake.base_url, devlake.api_prefix, target,
                                              client))
            if checks[-1].outcome == "fail" and "token" in checks[-1].name:
                break
    finally:
        await client.aclose()
    return checks


async def _check_target(base_url: str, api_prefix: str, target: Target,
                        client: DevLakeClient) -> Check:
    label = f"devlake {target.team} target ({target.kind.replace('_', ' ')} {target.value})"
    answer = await client.get(target_url(base_url, api_prefix, target))
    if answer.status is None:
        return Check("devlake reachable", "fail", f"{base_url}: {answer.error}",
                     "check integration.devlake.base_url and the network policy")
    if answer.status in (401, 403):
        return Check("devlake token", "fail", f"DevLake answered {answer.status}",
                     "DEVLAKE_WEBHOOK_TOKEN is wrong or expired: create a new API key")
    if answer.status == 404:
        what = "project" if target.kind == "project_name" else "webhook connection"
        return Check(label, "fail", f"no such {what}",
                     f"create the {what} in DevLake, or fix the configured "
                     f"{'project_name' if target.kind == 'project_name' else target.kind}")
    if answer.status >= 400:
        return Check(label, "fail", f"DevLake answered {answer.status}",
                     "check api_prefix: /api/rest through config-ui, /api on the server")
    hint = "" if target.kind == "project_name" else (
        "make sure the connection is attached to a project, or its data stays off the dashboards"
    )
    return Check(label, "pass", "exists", hint)


async def check_github(context: AppContext) -> list[Check]:
    github = context.settings.github
    token = context.config.secrets.github_token
    client = GitHubClient.for_context(context)
    try:
        answer = await client.rate_limit()
    except httpx.HTTPError as exc:
        return [Check("github reachable", "fail", f"{github.api_url}: {_error_text(exc)}",
                      "check github.api_url and the network policy")]
    finally:
        await client.aclose()
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


async def check_webrca(config: LoadedConfig) -> list[Check]:
    webrca = config.settings.webrca
    blocked = _not_checkable(
        "webrca", "webrca.enabled", webrca.enabled, config.secrets.offline_token, "OFFLINE_TOKEN",
        "get an offline token for Red Hat SSO and set OFFLINE_TOKEN (or _FILE)")
    if blocked:
        return blocked
    async with webrca_http(config) as http:
        try:
            await TokenSource.for_config(http, config).get()
        except TransientError as exc:
            return [Check("webrca token exchange", "fail", f"{webrca.token_url}: {exc}",
                          "check webrca.token_url and the network policy")]
        except TokenRejected as exc:
            if exc.error == "invalid_grant":
                return [Check("webrca token exchange", "fail",
                              "SSO rejected OFFLINE_TOKEN (invalid_grant)",
                              "the offline token expired or was revoked: get a new one")]
            return [Check("webrca token exchange", "fail", f"SSO answered {exc.error}",
                          "check webrca.token_url and webrca.client_id")]
    return [Check("webrca token exchange", "pass", "access token issued")]


async def run_checks(config: LoadedConfig, kube_probe: KubeProbe | None = None) -> list[Check]:
    """Every check the configuration calls for, in the order an operator fixes them."""
    checks = [Check("configuration", "pass", f"{config.source} is valid")]
    if config.settings.argocd.enabled:
        checks += await (kube_probe or probe_kubernetes)(config)
    else:
        checks.append(Check("kubernetes", "skip", "argocd.enabled is false"))
    checks += await check_redis(config)
    redis_config = config.settings.storage.redis
    context = AppContext(config=config, redis=connect(redis_config),
                         keys=Keys(redis_config.key_prefix))
    try:
        results = await asyncio.gather(
            check_devlake(config), check_github(context), check_webrca(config),
        )
    finally:
        await context.redis.aclose()
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
