"""``doraforwarder doctor``: check every dependency the configuration names.

Each check answers one question an operator asks when the dashboards stay
empty ("can it watch?", "does DevLake take this target's key?", "does the
connection exist?") with a pass/fail line and a hint that says what to do. Required
checks decide the exit code; warnings (no Redis persistence, no GitHub token)
do not.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable

import httpx
import redis.asyncio as aioredis
from pydantic import SecretStr
from redis.exceptions import AuthenticationError, OutOfMemoryError

from doraforwarder.apiauth import TOKENS_ENV, TOKENS_FILE_ENV, tokens_from_environment
from doraforwarder.commits.github import GitHubClient
from doraforwarder.config import LoadedConfig
from doraforwarder.context import AppContext
from doraforwarder.devlake.client import GLOBAL_SCOPE, DevLakeClient, refusal
from doraforwarder.devlake.routing import (
    Router,
    connection_url,
    endpoint,
    project_connection_name,
    scope_path,
)
from doraforwarder.keys import Keys
from doraforwarder.ops.checks import Check, Outcome
from doraforwarder.ops.checks import error_text as _error_text
from doraforwarder.ops.probes import probe_kubernetes
from doraforwarder.ops.registry_check import ImageSource, check_registries
from doraforwarder.outbox import Target
from doraforwarder.redis_errors import redis_failure
from doraforwarder.storage import connect, read_marker
from doraforwarder.webhook_paths import normalize_prefix
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
        except AuthenticationError as exc:
            return [Check("redis reachable", "fail", redis_failure(exc, redis_config),
                          "fix REDIS_PASSWORD (or storage.redis.password / username)")]
        except Exception as exc:
            return [Check("redis reachable", "fail", f"{shown}: {_error_text(exc)}",
                          "start Redis or fix storage.redis.address / REDIS_HOST / REDIS_PASSWORD")]
        checks = [Check("redis reachable", "pass", shown)]
        keys = Keys(redis_config.keyspace)
        probe = keys.lock(f"doctor:{uuid.uuid4().hex}")
        try:
            await client.set(probe, "1", px=10_000)
            await client.delete(probe)
            checks.append(Check("redis writable", "pass", "SET and DEL succeeded"))
        except OutOfMemoryError:
            checks.append(Check(
                "redis writable", "fail",
                "Redis is full (used memory over maxmemory, noeviction): the outbox still "
                "drains, but nothing new is detected or staged until memory frees",
                "raise maxmemory (REDIS_MAXMEMORY with the container's memory limit) or find "
                "what fills it ('doraforwarder outbox stats', dead letters)"))
        except Exception as exc:
            checks.append(Check("redis writable", "fail", _error_text(exc),
                                "the daemon needs write access (read-only replica?)"))
        checks.append(await _redis_persistence(client))
        checks.append(await _redis_data_kept(client, keys))
        return checks
    finally:
        await client.aclose()


async def _redis_data_kept(client: aioredis.Redis, keys: Keys) -> Check:
    """What the daemon's marker says: Redis kept its data, lost it, or no daemon ran yet."""
    name = "redis data kept"
    try:
        marker = read_marker(await client.get(keys.redis_marker))
    except Exception as exc:
        return Check(name, "warn", f"cannot read the marker ({_error_text(exc)})")
    if marker is None:
        return Check(name, "skip", "no daemon has written its marker here yet (a first start, "
                                   "or the data was lost while none ran)")
    if marker.get("lost_at"):
        return Check(name, "warn",
                     f"Redis lost its data at {marker['lost_at']} (found by "
                     f"{marker.get('detected_by')}): what was staged and not yet delivered "
                     "then was gone from Redis (a daemon with "
                     "storage.redis.backfill_on_data_loss sent ArgoCD's kept history again; "
                     "its log says so)",
                     "run Redis with appendonly and a replica (docs/redis.md)")
    return Check(name, "pass", f"kept since {marker.get('since')}")


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


PROJECT_ROUTE_SINCE = (1, 0, 3)
"""DevLake release that added ``projects/{name}/deployments``."""
BY_NAME_SINCE = (1, 0, 2)
"""DevLake release that added ``connections/by-name/{name}/...``."""

PREREQUISITES = (
    ("devlake prerequisite: project",
     "cannot check that each webhook connection is attached to a DevLake project "
     "(with a blueprint): records of an unattached connection stay off the dashboards",
     "in config-ui: Projects > your project > Connections: add the webhook connection"),
    ("devlake prerequisite: schedule",
     "cannot check that the project's blueprint runs on a schedule: DORA metrics are only "
     "computed when it runs",
     "in config-ui: Projects > your project > Sync Policy: set a schedule (e.g. daily)"),
    ("devlake prerequisite: lead time",
     "cannot check that a GitHub connection for the same repositories is in the same "
     "project: without it there is no lead time for changes",
     "add the GitHub connection and its repositories to the same project"),
    ("devlake prerequisite: argocd plugin",
     "cannot check that DevLake's own ArgoCD plugin is not collecting the same "
     "applications: each deployment would count twice",
     "leave the ArgoCD plugin out of projects this daemon feeds"),
)


def version_url(base_url: str, api_prefix: str) -> str:
    """DevLake's ``GET /version`` (no key): ``/api/version`` through config-ui."""
    base = base_url.rstrip("/")
    return f"{base}/api/version" if normalize_prefix(api_prefix) == "/api/rest" \
        else f"{base}/version"


def parse_version(text: str) -> tuple[tuple[int, int, int], bool] | None:
    """``v1.0.3-beta9@abc`` -> ((1, 0, 3), True: a pre-release); None if unreadable."""
    found = re.match(r"v?(\d+)\.(\d+)\.(\d+)(-[^@\s]+)?", text.strip())
    if found is None:
        return None
    major, minor, patch = (int(found.group(n)) for n in (1, 2, 3))
    return (major, minor, patch), found.group(4) is not None


async def check_devlake(config: LoadedConfig) -> list[Check]:
    """Every target probed with the key it will use; nothing created or changed in DevLake.

    A connection is probed with a POST of ``{}`` to its deployments route,
    which DevLake validates before it stores anything: 400 means the route
    exists and the key covers it, 401/403 that the key is refused (and why),
    404 that there is no such connection. The project route is never called:
    it creates its connection before it reads the body. A project target is
    probed through the connection that route creates, by name.
    """
    devlake = config.settings.integration.devlake
    if not devlake.enabled:
        return [Check("devlake", "skip", "integration.devlake.enabled is false")]
    router = Router(devlake)
    envs = router.token_envs()
    keys = {target: config.secrets.devlake_key(env) for target, env in envs.items()}
    client = DevLakeClient(None, devlake.timeout_seconds, target_keys=keys)
    try:
        version, checks = await _check_version(devlake.base_url, devlake.api_prefix, client)
        if version is not None and version[0] == "unreachable":
            return checks
        for target in router.targets():
            env = envs[target.key]
            if keys[target.key] is None:
                checks.append(Check(
                    f"{_label(target)} key", "fail", f"{env} is not set",
                    f"create a DevLake API key (allowed path {GLOBAL_SCOPE}) and set {env} "
                    f"(or {env}_FILE)"))
                continue
            checks += await _check_target(devlake.base_url, devlake.api_prefix, target, env,
                                          client, version)
    finally:
        await client.aclose()
    checks += [Check(name, "warn", detail, hint) for name, detail, hint in PREREQUISITES]
    return checks


VersionInfo = tuple[str, tuple[tuple[int, int, int], bool] | None]


async def _check_version(base_url: str, api_prefix: str, client: DevLakeClient
                         ) -> tuple[VersionInfo | None, list[Check]]:
    url = version_url(base_url, api_prefix)
    answer = await client.get(url)
    if answer.status is None:
        return ("unreachable", None), [Check(
            "devlake reachable", "fail", f"{base_url}: {answer.error}",
            "check integration.devlake.base_url and the network policy")]
    if answer.status in (502, 503, 504):
        return ("unreachable", None), [Check(
            "devlake reachable", "fail",
            f"HTTP {answer.status} from GET {url}: the proxy in front of DevLake (config-ui's "
            "nginx) cannot reach DevLake's backend",
            "check that DevLake's backend is running, and config-ui's DEVLAKE_ENDPOINT")]
    if answer.status == 401:
        # DevLake's /version checks no key and no user: a 401 is a proxy's own password
        who = ("config-ui's basic auth (ADMIN_USER/ADMIN_PASS), which leaves /api/rest, "
               "where deliveries go, open" if normalize_prefix(api_prefix) == "/api/rest"
               else "a proxy in front of DevLake")
        return None, [Check(
            "devlake version", "warn",
            f"not checked: GET {url} asks for a password: {who}",
            "by-name targets need DevLake 1.0.2 or later, project targets 1.0.3: check the "
            "version in DevLake yourself")]
    text = ""
    if answer.status == 200:
        try:
            text = str(json.loads(answer.body).get("version", ""))
        except (ValueError, AttributeError):
            text = ""
    parsed = parse_version(text) if text else None
    if parsed is None:
        shown = f"version {text!r}" if text else f"HTTP {answer.status} from GET {url}"
        return None, [Check("devlake version", "warn", f"cannot read DevLake's version ({shown})",
                            "by-name targets need DevLake 1.0.2 or later, project targets 1.0.3")]
    return (text, parsed), [Check("devlake version", "pass", text)]


def _label(target: Target) -> str:
    return f"devlake {target.team} target ({target.kind.replace('_', ' ')} {target.value})"


def _too_old(target: Target, version: VersionInfo | None) -> Check | None:
    if version is None or version[1] is None:
        return None
    release, pre = version[1]
    if target.kind == "project_name":
        since, what = PROJECT_ROUTE_SINCE, "project targets"
    elif target.kind == "connection_name":
        since, what = BY_NAME_SINCE, "by-name targets"
    else:
        return None
    wanted = ".".join(map(str, since))
    if release < since:
        return Check(_label(target), "fail",
                     f"DevLake {version[0]} is older than {wanted}, which {what} need",
                     f"upgrade DevLake to {wanted} or later, or use project_id (a connection id)")
    if release == since and pre:
        return Check(_label(target), "warn",
                     f"DevLake {version[0]} is a pre-release of {wanted}; {what} need {wanted}",
                     f"upgrade DevLake to {wanted}")
    return None


async def _check_target(base_url: str, api_prefix: str, target: Target, env: str,
                        client: DevLakeClient, version: VersionInfo | None) -> list[Check]:
    label = _label(target)
    old = _too_old(target, version)
    if old is not None and old.failed:
        return [old]
    url = endpoint(base_url, api_prefix, target, "deployment") \
        if target.kind != "project_name" else connection_url(base_url, api_prefix, target) \
        + "/deployments"
    path = scope_path(url, base_url, api_prefix)
    answer = await client.post(url, {}, target=target.key)
    checks = [old] if old is not None else []
    if answer.status is None:
        return [*checks, Check(label, "fail", f"{base_url}: {answer.error}",
                               "check integration.devlake.base_url and the network policy")]
    if answer.status in (401, 403):
        found = refusal(answer)
        return [*checks, Check(label, "fail",
                               f"DevLake refuses the key in {env} ({found.cause}): "
                               f"{found.explain(path, env)}",
                               f"a key with allowed path {GLOBAL_SCOPE} serves every target")]
    if answer.status == 404 and target.kind == "project_name":
        name = project_connection_name(target.value)
        return [*checks, Check(
            label, "warn",
            f"connection {name} does not exist yet: it will be created by the first "
            f"deployment to project {target.value}; incidents wait until then",
            f"make sure project {target.value} exists in DevLake and has a blueprint "
            "(the project route answers 404 or 400 otherwise)")]
    if answer.status == 404:
        return [*checks, Check(label, "fail", f"no such webhook connection ({path})",
                               f"create the webhook connection in DevLake, or fix "
                               f"{target.kind}")]
    if answer.status == 400:
        detail = "exists; the key covers it" if target.kind != "project_name" else (
            f"connection {project_connection_name(target.value)} exists; the key covers it")
        return [*checks, Check(label, "pass", detail)]
    if answer.status >= 500:
        return [*checks, Check(label, "fail", f"DevLake answered {answer.status} to POST {path}",
                               "DevLake's backend, or the proxy in front of it, is failing: "
                               "check DevLake's log (deliveries retry meanwhile)")]
    return [*checks, Check(label, "fail", f"DevLake answered {answer.status} to POST {path}",
                           "check api_prefix: /api/rest when base_url is config-ui, /rest "
                           "when it is the DevLake backend")]


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


def check_alertmanager(config: LoadedConfig) -> list[Check]:
    """Whether ``POST /api/v1/alertmanager`` is served, and who may post to it.

    Read from the configuration and ``API_TOKENS(_FILE)`` as the daemon reads
    them at start: a token set means a bearer token is required; none means
    open on a loopback host and every notification refused (401) elsewhere.
    """
    settings = config.settings
    alerts = settings.alertmanager
    name = "alertmanager receiver"
    if not alerts.enabled:
        return [Check(name, "skip", "alertmanager.enabled is false")]
    if not settings.integration.devlake.enabled:
        return [Check(name, "fail", "integration.devlake is disabled: every notification is "
                                    "answered 503", "enable integration.devlake")]
    what = (f"POST /api/v1/alertmanager, incident per {alerts.incident_key}, matchers "
            f"{', '.join(alerts.matchers) or '(every alert)'}, component label "
            f"{alerts.component_label}")
    hint = (f"set {TOKENS_ENV} (or {TOKENS_FILE_ENV}) and the same token in the webhook's "
            "http_config.authorization.credentials")
    try:
        tokens = tokens_from_environment()
    except ValueError as exc:
        return [Check(name, "fail", f"{what}; {exc}: every notification is refused", hint)]
    if tokens:
        return [Check(name, "pass", f"{what}; authenticated: a bearer token among "
                                    f"{TOKENS_ENV} ({len(tokens)}) is required")]
    if settings.server.listens_on_loopback:
        return [Check(name, "warn", f"{what}; NOT authenticated: no {TOKENS_ENV}, any local "
                                    f"process on {settings.server.host} may post", hint)]
    return [Check(name, "fail", f"{what}; no {TOKENS_ENV}: every notification is refused (401) "
                                f"on {settings.server.host}", hint)]


async def run_checks(config: LoadedConfig, kube_probe: KubeProbe | None = None,
                     image_source: ImageSource | None = None) -> list[Check]:
    """Every check the configuration calls for, in the order an operator fixes them."""
    checks = [Check("configuration", "pass", f"{config.source} is valid")]
    if config.settings.argocd.enabled or config.settings.server.effective_api_auth == "kubernetes":
        checks += await (kube_probe or probe_kubernetes)(config)
    else:
        checks.append(Check("kubernetes", "skip", "argocd.enabled is false"))
    checks += await check_redis(config)
    redis_config = config.settings.storage.redis
    context = AppContext(config=config, redis=connect(redis_config),
                         keys=Keys(redis_config.keyspace))
    try:
        results = await asyncio.gather(
            check_devlake(config), check_github(context), check_webrca(config),
            check_registries(config, image_source),
        )
    finally:
        await context.redis.aclose()
    for group in results:
        checks += group
    checks += check_alertmanager(config)
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
