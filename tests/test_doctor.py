"""``doraforwarder doctor`` against the fakes: every check passes, then each one fails."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from doraforwarder.config import load_config
from doraforwarder.context import AppContext
from doraforwarder.keys import Keys
from doraforwarder.ops.doctor import (
    Check,
    check_alertmanager,
    parse_version,
    render,
    run_checks,
)
from doraforwarder.ops.permissions import Permission
from doraforwarder.storage import RedisWatch
from doraforwarder.testing.http_fake import free_port
from doraforwarder.testing.redis_server import RedisServer
from doraforwarder.testing.world import FakeWorld


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeWorld]:
    with FakeWorld(tmp_path_factory.mktemp("doctor"), connections={1: "global", 2: "team"}) as w:
        from doraforwarder.testing.argocd_objects import LiveApp

        w.kube.apply(LiveApp("svc-a").snapshot())
        yield w


@pytest.fixture
def secrets_env(world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in world.environment().items():
        monkeypatch.setenv(name, value)


async def checks_for(world: FakeWorld, overrides: dict[str, Any] | None = None,
                     name: str = "config.yaml") -> dict[str, Check]:
    config = load_config(world.write_config(overrides, name=name))
    return {check.name: check for check in await run_checks(config)}


def outcomes(checks: dict[str, Check]) -> dict[str, str]:
    return {name: check.outcome for name, check in checks.items()}


TEAM = {"integration": {"devlake": {"teams": [
    {"name": "team", "project_id": "2", "argocd_components": ["svc"]}]}}}


@pytest.mark.usefixtures("secrets_env")
async def test_everything_passes(world: FakeWorld) -> None:
    checks = await checks_for(world, TEAM)
    assert outcomes(checks) == {
        "configuration": "pass",
        "kubernetes config": "pass",
        "applications in argocd": "pass",
        "kubernetes permissions": "pass",
        "redis reachable": "pass",
        "redis writable": "pass",
        "redis persistence": "pass",
        "redis data kept": "skip",
        "devlake version": "pass",
        "devlake global target (connection id 1)": "pass",
        "devlake team target (connection id 2)": "pass",
        "devlake prerequisite: project": "warn",
        "devlake prerequisite: schedule": "warn",
        "devlake prerequisite: lead time": "warn",
        "devlake prerequisite: argocd plugin": "warn",
        "github token": "pass",
        "webrca token exchange": "pass",
        "registry": "skip",
        "alertmanager receiver": "skip",
    }
    text = render(list(checks.values()))
    assert "0 failed" in text
    for secret in world.secrets:
        assert secret not in text


@pytest.mark.usefixtures("secrets_env")
async def test_kubernetes_down_and_empty_namespace(world: FakeWorld) -> None:
    checks = await checks_for(world, {"argocd": {"namespaces": ["argocd", "empty"]}})
    assert checks["applications in empty"].outcome == "warn"
    world.kube.stop()
    try:
        checks = await checks_for(world)
    finally:
        world.kube.start()
    assert checks["applications in argocd"].outcome == "fail"
    assert "network policy" in checks["applications in argocd"].hint


@pytest.mark.usefixtures("secrets_env")
async def test_kubernetes_token_rejected(world: FakeWorld, tmp_path: Path) -> None:
    kubeconfig = world.kube.write_kubeconfig(tmp_path / "bad-kubeconfig", token="wrong-token")
    checks = await checks_for(world, {"argocd": {"kubeconfig": str(kubeconfig)}})
    check = checks["applications in argocd"]
    assert check.outcome == "fail" and "401" in check.detail
    assert "list and watch" in check.hint


@pytest.mark.usefixtures("secrets_env")
async def test_kubernetes_permissions_asked_and_missing_ones_named(world: FakeWorld) -> None:
    """Each needed permission is one SelfSubjectAccessReview; the missing ones are named.

    A list cannot show that watch is missing, nor that api_auth kubernetes cannot
    review tokens: only the access reviews do.
    """
    world.kube.reset_counts()
    world.kube.permissions = {
        Permission("list", "argoproj.io", "applications", "argocd"),
        Permission("list", "argoproj.io", "applications", "team-b"),
        Permission("watch", "argoproj.io", "applications", "team-b"),
        Permission("create", "authorization.k8s.io", "subjectaccessreviews", None),
    }
    try:
        checks = await checks_for(world, {"argocd": {"namespaces": ["argocd", "team-b"]},
                                          "server": {"api_auth": "kubernetes"}})
        asked = [call for call in world.kube.calls if call.resource == "selfsubjectaccessreviews"]
        # a wildcard grant covers every namespace, as RBAC's ClusterRoleBinding does
        world.kube.permissions |= {
            Permission("watch", "argoproj.io", "applications", None),
            Permission("create", "authentication.k8s.io", "tokenreviews", None)}
        fixed = await checks_for(world, {"argocd": {"namespaces": ["argocd", "team-b"]},
                                         "server": {"api_auth": "kubernetes"}})
    finally:
        world.kube.permissions = None
    assert checks["applications in argocd"].outcome == "pass"  # the list alone works
    check = checks["kubernetes permissions"]
    assert check.outcome == "fail"
    assert check.detail == ("missing: watch applications.argoproj.io in namespace argocd; "
                            "create tokenreviews.authentication.k8s.io (cluster-wide)")
    assert "kubectl auth can-i watch applications.argoproj.io -n argocd" in check.hint
    assert len(asked) == 6  # list+watch in each namespace, two review kinds
    assert fixed["kubernetes permissions"].outcome == "pass"
    assert "all 6 allowed" in fixed["kubernetes permissions"].detail


@pytest.mark.usefixtures("secrets_env")
async def test_kubernetes_permissions_all_namespaces_and_forbidden_list(world: FakeWorld) -> None:
    world.kube.permissions = set()
    try:
        checks = await checks_for(world, {"argocd": {"namespaces": ["*"]}})
    finally:
        world.kube.permissions = None
    listed = checks["applications in *"]
    assert listed.outcome == "fail" and "403" in listed.detail
    assert checks["kubernetes permissions"].detail == (
        "missing: list applications.argoproj.io in every namespace; "
        "watch applications.argoproj.io in every namespace")
    assert "kubectl auth can-i list applications.argoproj.io --all-namespaces" in \
        checks["kubernetes permissions"].hint


@pytest.mark.usefixtures("secrets_env")
async def test_api_auth_kubernetes_without_argocd_still_checks_reviews(world: FakeWorld) -> None:
    checks = await checks_for(world, {"argocd": {"enabled": False},
                                      "server": {"api_auth": "kubernetes"}})
    assert "applications in argocd" not in checks
    assert checks["kubernetes permissions"].outcome == "pass"
    assert "tokenreviews" in checks["kubernetes permissions"].detail


@pytest.mark.usefixtures("secrets_env")
async def test_missing_kubeconfig(world: FakeWorld, tmp_path: Path) -> None:
    checks = await checks_for(world, {"argocd": {"kubeconfig": str(tmp_path / "none")}})
    assert checks["kubernetes config"].outcome == "fail"


@pytest.mark.usefixtures("secrets_env")
async def test_redis_unreachable(world: FakeWorld) -> None:
    checks = await checks_for(world, {"storage": {"redis": {"address": f"127.0.0.1:{free_port()}"}}})
    assert checks["redis reachable"].outcome == "fail"
    assert "redis writable" not in checks


@pytest.mark.usefixtures("secrets_env")
async def test_redis_without_persistence_is_a_warning(world: FakeWorld,
                                                      redis_server: RedisServer) -> None:
    checks = await checks_for(world, {"storage": {"redis": {"address": redis_server.address}}})
    assert checks["redis persistence"].outcome == "warn"
    assert "appendonly" in checks["redis persistence"].hint


@pytest.mark.usefixtures("secrets_env")
async def test_a_full_redis_and_a_data_loss_are_named(world: FakeWorld) -> None:
    with RedisServer() as server:
        overrides = {"storage": {"redis": {"address": server.address}}}
        client = aioredis.Redis.from_url(server.url, decode_responses=True)
        try:
            watch = RedisWatch(AppContext(config=load_config(world.write_config(overrides)),
                                          redis=client, keys=Keys("dora-metrics")))
            await watch.check()
            checks = await checks_for(world, overrides)
            assert checks["redis data kept"].outcome == "pass"
            await client.flushall()
            await watch.check()  # finds the marker gone and writes a new one saying so
            await client.config_set("maxmemory", "1")
            checks = await checks_for(world, overrides)
        finally:
            await client.aclose()
    writable = checks["redis writable"]
    assert writable.outcome == "fail" and "Redis is full" in writable.detail
    assert "maxmemory" in writable.hint and "read-only" not in writable.hint
    kept = checks["redis data kept"]
    assert kept.outcome == "warn" and "Redis lost its data at" in kept.detail


GLOBAL_LABEL = "devlake global target (connection id 1)"


@pytest.mark.usefixtures("secrets_env")
async def test_devlake_key_rejected(world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVLAKE_WEBHOOK_TOKEN", "not-the-key")
    checks = await checks_for(world)
    assert checks[GLOBAL_LABEL].outcome == "fail"
    assert "invalid_key" in checks[GLOBAL_LABEL].detail
    assert "DEVLAKE_WEBHOOK_TOKEN" in checks[GLOBAL_LABEL].detail
    assert "not-the-key" not in render(list(checks.values()))


@pytest.mark.usefixtures("secrets_env")
async def test_devlake_key_missing(world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEVLAKE_WEBHOOK_TOKEN")
    checks = await checks_for(world)
    assert checks[f"{GLOBAL_LABEL} key"].outcome == "fail"
    assert "DEVLAKE_WEBHOOK_TOKEN is not set" in checks[f"{GLOBAL_LABEL} key"].detail


@pytest.mark.usefixtures("secrets_env")
async def test_devlake_connection_missing_and_by_name(world: FakeWorld) -> None:
    checks = await checks_for(world, {"integration": {"devlake": {"teams": [
        {"name": "ghost", "project_id": "9", "argocd_components": ["svc"]},
        {"name": "named", "connection_name": "team", "argocd_components": ["svc"]},
    ]}}})
    assert checks["devlake ghost target (connection id 9)"].outcome == "fail"
    assert "no such webhook connection" in checks["devlake ghost target (connection id 9)"].detail
    assert checks["devlake named target (connection name team)"].outcome == "pass"


@pytest.mark.usefixtures("secrets_env")
@pytest.mark.parametrize("prefix", ["/api/rest", "/rest"])
async def test_devlake_each_target_with_its_own_key_and_nothing_created(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    world.devlake.add_project("Release")
    monkeypatch.setenv("DEVLAKE_WEBHOOK_TOKEN", world.devlake.connection_key(1))
    monkeypatch.setenv("TEAM_KEY", world.devlake.connection_key(1))  # wrong connection's key
    checks = await checks_for(world, {"integration": {"devlake": {"api_prefix": prefix, "teams": [
        {"name": "team", "project_id": "2", "token_env": "TEAM_KEY"},
        {"name": "named", "connection_name": "team", "token_env": "WIDE_KEY"},
        {"name": "release", "project_name": "Release", "token_env": "WIDE_KEY"},
    ]}}})
    before = len(world.devlake.connections)
    assert checks[GLOBAL_LABEL].outcome == "pass"  # its own key covers it
    team = checks["devlake team target (connection id 2)"]
    assert team.outcome == "fail"
    assert "scope does not cover /plugins/webhook/connections/2/deployments" in team.detail
    assert "TEAM_KEY" in team.detail
    assert checks["devlake named target (connection name team) key"].outcome == "fail"
    assert "WIDE_KEY is not set" in checks["devlake named target (connection name team) key"].detail
    monkeypatch.setenv("WIDE_KEY", world.devlake.token or "")
    checks = await checks_for(world, {"integration": {"devlake": {"api_prefix": prefix, "teams": [
        {"name": "release", "project_name": "Release", "token_env": "WIDE_KEY"}]}}})
    release = checks["devlake release target (project name Release)"]
    assert release.outcome == "warn"
    assert "will be created by the first deployment" in release.detail
    assert len(world.devlake.connections) == before  # doctor created nothing
    assert world.devlake.project_connection("Release") is None
    assert not [p for p in world.devlake.posts() if "/projects/" in p.path]
    assert world.devlake.accepted() == []


@pytest.mark.usefixtures("secrets_env")
async def test_devlake_too_old_for_project_and_by_name_targets(world: FakeWorld) -> None:
    world.devlake.version = "v1.0.1@abc"
    try:
        checks = await checks_for(world, {"integration": {"devlake": {"teams": [
            {"name": "named", "connection_name": "team"},
            {"name": "release", "project_name": "Release"}]}}})
    finally:
        world.devlake.version = "v1.0.3@fake"
    assert checks["devlake version"].detail == "v1.0.1@abc"
    named = checks["devlake named target (connection name team)"]
    assert named.outcome == "fail" and "older than 1.0.2" in named.detail
    release = checks["devlake release target (project name Release)"]
    assert release.outcome == "fail" and "older than 1.0.3" in release.detail
    assert checks[GLOBAL_LABEL].outcome == "pass"


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("v1.0.3", ((1, 0, 3), False)), ("v1.0.3-beta9@0a1b2c", ((1, 0, 3), True)),
     ("1.0.2", ((1, 0, 2), False)), ("dev", None), ("", None)],
)
def test_parse_version(text: str, parsed: object) -> None:
    assert parse_version(text) == parsed


@pytest.mark.usefixtures("secrets_env")
async def test_devlake_unreachable(world: FakeWorld) -> None:
    checks = await checks_for(world, {"integration": {"devlake": {
        "base_url": f"http://127.0.0.1:{free_port()}"}}})
    assert checks["devlake reachable"].outcome == "fail"


@pytest.mark.usefixtures("secrets_env")
async def test_github_token_rejected_or_missing(world: FakeWorld,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_not_the_token_00000000")
    checks = await checks_for(world)
    assert checks["github token"].outcome == "fail"
    monkeypatch.delenv("GITHUB_TOKEN")
    world.github.token = None
    try:
        checks = await checks_for(world)
    finally:
        world.github.token = world.environment()["GITHUB_TOKEN"]
    assert checks["github token"].outcome == "warn"
    assert "60 requests an hour" in checks["github token"].hint


@pytest.mark.usefixtures("secrets_env")
async def test_webrca_offline_token_rejected(world: FakeWorld,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFLINE_TOKEN", "expired-offline-token")
    checks = await checks_for(world)
    assert checks["webrca token exchange"].outcome == "fail"
    assert "invalid_grant" in checks["webrca token exchange"].detail


@pytest.mark.usefixtures("secrets_env")
async def test_disabled_parts_are_skipped(world: FakeWorld) -> None:
    checks = await checks_for(world, {"argocd": {"enabled": False}, "webrca": {"enabled": False},
                                      "integration": {"devlake": {"enabled": False}}})
    assert {checks[n].outcome for n in ("kubernetes", "webrca", "devlake")} == {"skip"}


@pytest.mark.parametrize(("host", "tokens", "outcome", "says"), [
    ("127.0.0.1", "", "warn", "NOT authenticated"),
    ("127.0.0.1", "t0ken-one,t0ken-two", "pass", "API_TOKENS (2) is required"),
    ("0.0.0.0", "t0ken-one", "pass", "authenticated"),
    ("0.0.0.0", "", "fail", "every notification is refused (401)"),
])
async def test_alertmanager_receiver_enabled_and_authenticated(
        world: FakeWorld, monkeypatch: pytest.MonkeyPatch, host: str, tokens: str,
        outcome: str, says: str) -> None:
    monkeypatch.setenv("API_TOKENS", tokens)
    monkeypatch.setenv("DEVLAKE_WEBHOOK_TOKEN", "k")
    config = load_config(world.write_config(
        {"server": {"host": host}, "alertmanager": {"enabled": True}}, name="am.yaml"))
    (check,) = check_alertmanager(config)
    assert (check.name, check.outcome) == ("alertmanager receiver", outcome)
    assert says in check.detail and "fingerprint" in check.detail
    assert "t0ken" not in check.detail + check.hint


def test_alertmanager_receiver_without_devlake(world: FakeWorld) -> None:
    config = load_config(world.write_config(
        {"alertmanager": {"enabled": True}, "integration": {"devlake": {"enabled": False}}},
        name="am-off.yaml"))
    (check,) = check_alertmanager(config)
    assert check.outcome == "fail" and "answered 503" in check.detail


def test_cli_exit_codes(world: FakeWorld, clean_env: dict[str, str]) -> None:
    config = world.write_config(name="cli.yaml")
    command = [sys.executable, "-m", "doraforwarder", "doctor", "--config", str(config)]
    good = subprocess.run(command, capture_output=True, text=True, timeout=60,
                          env={**clean_env, **world.environment()})
    assert good.returncode == 0, good.stdout + good.stderr
    assert "PASS  configuration" in good.stdout
    bad = subprocess.run(command, capture_output=True, text=True, timeout=60,
                         env={**clean_env, **world.environment(), "OFFLINE_TOKEN": "nope-nope"})
    assert bad.returncode == 1
    assert "FAIL  webrca token exchange" in bad.stdout and "hint:" in bad.stdout
    for secret in world.secrets:
        assert secret not in good.stdout + good.stderr + bad.stdout + bad.stderr
    broken = subprocess.run([*command[:-1], str(world.directory / "missing.yaml")],
                            capture_output=True, text=True, timeout=60, env=clean_env)
    assert broken.returncode == 2 and "cannot read configuration file" in broken.stderr


@pytest.mark.usefixtures("secrets_env")
async def test_devlake_behind_config_ui_password(world: FakeWorld) -> None:
    """config-ui with ADMIN_USER/ADMIN_PASS (real nginx in front of DevLake v1.0.3): its
    /api/version asks for the password, the targets under /api/rest still pass."""
    world.devlake.config_ui_login = ("admin", "s3cret")
    try:
        checks = await checks_for(world)
    finally:
        world.devlake.config_ui_login = None
    version = checks["devlake version"]
    assert version.outcome == "warn"
    assert "asks for a password: config-ui's basic auth" in version.detail
    assert "s3cret" not in render(list(checks.values()))
    assert checks[GLOBAL_LABEL].outcome == "pass"


@pytest.mark.usefixtures("secrets_env")
async def test_devlake_backend_down_behind_config_ui(world: FakeWorld) -> None:
    """DevLake's backend down, config-ui's nginx up: 502 is named as such, not as a wrong
    api_prefix (what doctor said on real nginx before)."""
    world.devlake.backend_down = True
    try:
        checks = await checks_for(world)
    finally:
        world.devlake.backend_down = False
    reachable = checks["devlake reachable"]
    assert reachable.outcome == "fail"
    assert "HTTP 502" in reachable.detail and "DevLake's backend" in reachable.detail
    assert GLOBAL_LABEL not in checks
    assert not any("api_prefix" in check.hint for check in checks.values())


@pytest.mark.usefixtures("secrets_env")
async def test_devlake_server_error_on_a_target_is_not_a_prefix_problem(
        world: FakeWorld) -> None:
    world.devlake.fail_next(2, 500)  # /api/version, then the global target's probe
    try:
        checks = await checks_for(world)
    finally:
        world.devlake.clear_faults()
    assert checks[GLOBAL_LABEL].outcome == "fail"
    assert "api_prefix" not in checks[GLOBAL_LABEL].hint
    assert "DevLake's log" in checks[GLOBAL_LABEL].hint
