"""The real daemon against a real DevLake: its pipeline and its dashboard's SQL decide.

Opt-in: it runs only when the variables of :mod:`tests.conformance.settings`
name a DevLake (see docs/devlake.md), and is skipped with one line
otherwise. It sets up throwaway projects as a user would (DORA metric on, a
blueprint, webhook connections for the three target kinds, an API key scoped
``/plugins/webhook/.*`` for the daemon), runs ``doraforwarder run`` against
fake Kubernetes, GitHub and WebRCA with DevLake as the sink (through a tee
that gives the fake DevLake the same requests), feeds the pull requests
through the webhook plugin, triggers the blueprints, reads the four numbers
with the SQL of DevLake's DORA dashboard, and compares them with the
scenario's truth and our model. Everything it created is deleted at the end.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conformance import settings

REASON = settings.skip_reason()
if REASON:
    pytest.skip(REASON, allow_module_level=True)

from doraforwarder.devlake.routing import Target, endpoint  # noqa: E402
from doraforwarder.keys import Keys  # noqa: E402
from doraforwarder.testing.dora import DoraModel  # noqa: E402
from doraforwarder.testing.world import FakeWorld, deep_merge  # noqa: E402
from doraforwarder.webhook_paths import escape_segment, normalize_prefix, unroutable_reason  # noqa: E402
from tests.conformance.dashboard import Dashboard  # noqa: E402
from tests.conformance.devlake_admin import Admin  # noqa: E402
from tests.conformance.scenario import START, TRUTH, Names, Scenario, overrides  # noqa: E402
from tests.conformance.tee import Tee  # noqa: E402
from tests.dora_scenario import Numbers  # noqa: E402
from tests.e2e.harness import DaemonProcess, wait_for  # noqa: E402

pytestmark = pytest.mark.timeout(1200)


@pytest.fixture
def conformance() -> settings.Conformance:
    return settings.load()


@pytest.fixture
def admin(conformance: settings.Conformance) -> Iterator[Admin]:
    admin = Admin(conformance)
    yield admin
    left = admin.cleanup()
    assert not left, f"could not remove what the suite created in DevLake: {left}"


def query_runner(conformance: settings.Conformance) -> Any:
    import pymysql

    db = conformance.database
    connection = pymysql.connect(host=db.host, port=db.port, user=db.user, password=db.password,
                                 database=db.database, autocommit=True, connect_timeout=10)
    with connection.cursor() as cursor:
        cursor.execute("SET time_zone = '+00:00'")  # as Grafana's MySQL data source does

    def run(sql: str) -> tuple[Any, ...] | None:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            row: tuple[Any, ...] | None = cursor.fetchone()
            return row

    return connection, run


def comparable(numbers: Numbers) -> tuple[Any, ...]:
    """MySQL divides to four decimals (``div_precision_increment``): so does the comparison."""
    rate = numbers.change_failure_rate
    return (numbers.deployments, numbers.deployment_days, numbers.median_lead_time_minutes,
            None if rate is None else round(rate, 4), numbers.time_to_restore_minutes,
            numbers.failed_deployment_recovery_minutes)


def table(rows: dict[str, dict[str, Numbers]]) -> str:
    head = ("project", "column", "deployments", "days", "lead time min", "CFR",
            "restore min", "recovery min")
    lines = ["  ".join(f"{h:>13}" for h in head)]
    for project, columns in rows.items():
        for column, numbers in columns.items():
            lines.append("  ".join(f"{v!s:>13}" for v in (project, column, *comparable(numbers))))
    return "\n".join(lines)


def test_scopes_of_the_keys_devlake_hands_out(conformance: settings.Conformance,
                                             admin: Admin) -> None:
    """A connection's own key serves that connection by id only; ``/plugins/webhook/.*`` all."""
    tag = secrets.token_hex(3)
    own = admin.webhook_connection(f"dfc-{tag}-scopes")
    other = admin.webhook_connection(f"dfc-{tag}-other")
    wide = admin.api_key(f"dfc-{tag}-webhook", "/plugins/webhook/.*")
    base = conformance.url + conformance.prefix + "/plugins/webhook/connections"
    cases = [
        # (key, path, expected status): an empty body is refused by validation (400),
        # after the key was accepted, so nothing is written
        (own["apiKey"]["apiKey"], f"/{own['id']}/deployments", 400),
        (own["apiKey"]["apiKey"], f"/by-name/{own['name']}/deployments", 403),
        (own["apiKey"]["apiKey"], f"/{other['id']}/deployments", 403),
        (wide, f"/{own['id']}/deployments", 400),
        (wide, f"/by-name/{other['name']}/deployments", 400),
        (None, f"/{own['id']}/deployments", 401),
        ("not-a-key", f"/{own['id']}/deployments", 403),
    ]
    got = []
    with httpx.Client(timeout=30) as client:
        for key, path, _ in cases:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            got.append(client.post(base + path, json={}, headers=headers).status_code)
        projects = client.get(conformance.url + conformance.prefix + "/projects",
                              headers={"Authorization": f"Bearer {wide}"}).status_code
    assert got == [case[2] for case in cases], list(zip([c[1] for c in cases], got, strict=True))
    assert projects == 403, "a /plugins/webhook/.* key must not read projects"


# Characters a connection name may hold that a URL path must escape, or may not escape.
AWKWARD = [" space", "+plus", "%25pct", "?query", "#hash", ";semi", ":colon", "@at", "&amp=eq",
           "é ü", "'quote", "(paren)", "*star", "!bang", "[br]", "~tilde", "$dollar", ",comma",
           "/slash"]


def test_connection_names_route_as_the_daemon_escapes_them(conformance: settings.Conformance,
                                                           admin: Admin) -> None:
    """Every name our configuration accepts reaches its connection by name (DevLake answers
    the empty body with 400); every name it refuses as unroutable is indeed not found."""
    tag = secrets.token_hex(3)
    prefix = normalize_prefix(conformance.prefix)
    wrong = []
    with httpx.Client(timeout=30) as client:
        for suffix in AWKWARD:
            name = f"dfc-{tag}{suffix}"
            admin.webhook_connection(name)
            reason = unroutable_reason(name, prefix)
            target = Target(kind="connection_name", value=name)
            if reason is None:
                url = endpoint(conformance.url, conformance.prefix, target, "deployment")
            else:  # the best the daemon could do: escape it anyway
                url = (f"{conformance.url}{conformance.prefix}/plugins/webhook/connections/"
                       f"by-name/{escape_segment(name)}/deployments")
            status = client.post(url, json={}, headers={
                "Authorization": f"Bearer {conformance.key}"}).status_code
            if (status == 400) != (reason is None):
                wrong.append((name, "accepted" if reason is None else "refused", status))
    assert not wrong, wrong


def test_dashboard_numbers_from_the_real_devlake(conformance: settings.Conformance, admin: Admin,
                                                 tmp_path: Path,
                                                 clean_env: dict[str, str]) -> None:
    dashboard = Dashboard.load(conformance.dora_json)
    tag = secrets.token_hex(3)
    names = Names(tag)
    blueprints = {
        "global": admin.project(names.global_project),
        "team-a": admin.project(names.team_a_project),
        "team-b": admin.project(names.team_b_project),
    }
    connections = {
        "global": int(admin.webhook_connection(names.global_connection)["id"]),
        "team-a": int(admin.webhook_connection(names.team_a_connection)["id"]),
    }
    admin.attach(blueprints["global"], [connections["global"]])
    admin.attach(blueprints["team-a"], [connections["team-a"]])
    admin.forget_connection_named(names.team_b_connection)
    daemon_key = admin.api_key(f"dfc-{tag}-forwarder", "/plugins/webhook/.*")
    projects = {"global": names.global_project, "team-a": names.team_a_project,
                "team-b": names.team_b_project}

    with FakeWorld(tmp_path / "world", connections={
            connections["global"]: names.global_connection,
            connections["team-a"]: names.team_a_connection}) as world, \
            Tee(conformance.url, world.devlake.url) as tee:
        assert world.redis is not None, "the conformance suite needs redis-server"
        world.devlake.set_token(daemon_key)
        world.devlake.add_project(projects["global"], connections=[connections["global"]])
        world.devlake.add_project(projects["team-a"], connections=[connections["team-a"]])
        world.devlake.add_project(projects["team-b"])
        scenario = Scenario(world, tag)
        config = world.write_config(deep_merge(
            overrides(names, connections["global"], conformance.prefix),
            {"integration": {"devlake": {"base_url": tee.url}}}))
        env = {**clean_env, **world.environment(), "DEVLAKE_WEBHOOK_TOKEN": daemon_key}
        log_dir = tmp_path / "logs"
        log_dir.mkdir()
        daemon = DaemonProcess(config, env, log_dir, "daemon").start()
        try:
            daemon.wait_ready(60)
            store = redis.Redis.from_url(world.redis.url, decode_responses=True)
            keys = Keys("dora-metrics")
            wait_for(lambda: all(store.exists(keys.app_state("argocd", name))
                                 for name in scenario.apps), 60, lambda: "apps not baselined")
            scenario.play()
            wait_for(lambda: bool(scenario.argocd_issue_keys()), 120,
                     lambda: "no ArgoCD incident")
            scenario.recover()
            wait_for(lambda: scenario.delivered(connections), 180,
                     lambda: f"records missing; the tee saw {len(tee.exchanges)} requests, "
                             f"disagreements {tee.disagreements}")
            assert daemon.terminate() == 0
        finally:
            daemon.ensure_stopped()
        for path in daemon.logs:
            data = path.read_bytes()
            assert daemon_key.encode() not in data and conformance.key.encode() not in data
        assert not tee.disagreements, tee.disagreements
        # DevLake's answers the daemon retried (the project route's first call) are fine;
        # nothing may end in the dead letters
        assert store.xlen(keys.dead_stream) == 0, store.xrange(keys.dead_stream)

        for project in ("global", "team-a"):
            for pull in scenario.pull_requests():
                admin.post_pull_request(connections[project], pull)
        attached = admin.blueprint_connections(blueprints["team-b"])
        assert len(attached) == 1, f"the project route attached {attached}"
        for project, blueprint in blueprints.items():
            state = admin.run_blueprint(blueprint)
            assert state["status"] == "TASK_COMPLETED", (project, state)

        model = DoraModel(world.devlake, world.github)
        connection, run = query_runner(conformance)
        rows: dict[str, dict[str, Numbers]] = {}
        try:
            for project, name in projects.items():
                got = model.project(name)
                rows[project] = {
                    "truth": TRUTH[project],
                    "model": Numbers(got.deployments, got.deployment_days,
                                     got.median_lead_time_minutes, got.change_failure_rate,
                                     got.time_to_restore_minutes,
                                     got.failed_deployment_recovery_minutes),
                    "devlake": dashboard.numbers(run, project=name,
                                                 time_from=START - timedelta(days=1),
                                                 time_to=datetime.now(UTC)),
                }
        finally:
            connection.close()
    report = table(rows)
    print("\n" + report)
    for project, columns in rows.items():
        values = {column: comparable(numbers) for column, numbers in columns.items()}
        assert values["truth"] == values["model"] == values["devlake"], f"{project}\n{report}"
