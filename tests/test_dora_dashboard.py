"""The DORA dashboard's numbers, from the in-process daemon against the fake world.

The daemon watches the fake Kubernetes API, resolves commits on the fake
GitHub, polls the fake WebRCA and posts to the fake DevLake; the DORA model
then computes what DevLake's dashboard shows, per project, and the test
compares it with the truth written in ``tests/dora_scenario.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from doraforwarder.daemon import Daemon
from doraforwarder.testing.dora import DoraModel
from doraforwarder.testing.world import FakeWorld
from tests.devlake_support import eventually
from tests.dora_scenario import CONNECTIONS, TRUTH, Estate, Numbers, overrides


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[FakeWorld]:
    with FakeWorld(tmp_path / "world", redis_appendonly=False,
                   connections=CONNECTIONS) as world:
        yield world


async def play(world: FakeWorld, mode: str) -> Estate:
    estate = Estate(world)
    daemon = Daemon(world.config(overrides(mode)))
    task = asyncio.create_task(daemon.run())
    try:
        await eventually(lambda: daemon.context.readiness.is_ready("argocd"), timeout=30)
        await eventually(lambda: daemon.context.status.apps_by_environment == {"PRODUCTION": 4},
                         timeout=30, what="every app classified")
        estate.play()
        await eventually(lambda: len(estate.argocd_issue_keys()) > 0, timeout=60,
                         what="the Degraded worker's incident")
        estate.recover()
        await eventually(estate.delivered, timeout=60, what="every record in DevLake")
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 30)
    return estate


def numbers(world: FakeWorld, project: str) -> Numbers:
    got = DoraModel(world.devlake, world.github).project(project)
    return Numbers(got.deployments, got.deployment_days, got.median_lead_time_minutes,
                   got.change_failure_rate, got.time_to_restore_minutes,
                   got.failed_deployment_recovery_minutes)


async def test_dashboard_numbers_per_project_in_head_mode(world: FakeWorld) -> None:
    estate = await play(world, "head")
    for project, truth in TRUTH.items():
        assert numbers(world, project) == truth, project
    model = DoraModel(world.devlake, world.github).project("global")
    assert model.lead_times_minutes == {"org/api#1": 1380, "org/api#2": 1620,
                                        "org/web#3": 240}
    assert model.warnings == []
    devlake = world.devlake
    # the global connection keeps each deployment's own id; a team's copy names the team,
    # so no two projects share a cicd_deployments row or an incident link
    global_ids = devlake.deployment_ids(1)
    assert all("@" not in deployment_id for deployment_id in global_ids)
    team_copies = ({i.removesuffix("@team-a") for i in devlake.deployment_ids(2)}
                   | {i.removesuffix("@team-b") for i in devlake.deployment_ids(3)})
    assert team_copies == global_ids
    assert all(i.endswith("@team-a") for i in devlake.deployment_ids(2))
    assert all(i.endswith("@team-b") for i in devlake.deployment_ids(3))
    rows = [row for row in devlake.commit_rows([1])
            if row["repo_url"] == "https://github.com/org/api"]
    assert {row["result"] for row in rows} == {"SUCCESS"}
    # head: one row per repository per deployment, dated with the deployment itself
    assert len(rows) == len({row["cicd_deployment_id"] for row in rows}) == 5
    assert all(row["started_date"] <= row["finished_date"] for row in rows)
    key = estate.argocd_issue_keys()
    assert len(key) == 1
    for connection, present in ((1, True), (2, False), (3, True)):
        issue = devlake.issue(connection, key[0])
        assert (issue is not None) == present
        if issue is not None:
            assert issue["status"] == "DONE" and issue["type"] == "INCIDENT"


async def test_range_mode_sends_every_commit_of_the_image_range(world: FakeWorld) -> None:
    estate = await play(world, "range")
    rows = world.devlake.commit_rows([1])
    redeploy = [row for row in rows if row["repo_url"] == "https://github.com/org/api"
                and row["commit_sha"] in {estate.p1, estate.m1}]
    # PR 1's commits go out with their author dates (as the reference did)
    assert {row["started_date"].hour for row in redeploy} == {11, 12}


async def test_long_scenario_numbers_as_devlake_shows_them(tmp_path: Path) -> None:
    """Six days, three teams (tests/dora_long_scenario.py): the model gives, per project,
    the numbers the real DevLake dashboard showed for the same script (v1.0.3, main
    420e494b), which are the truth since team targets get their own deployment ids
    (with shared ids, DevLake's cross-project join gave global 5/13 and team-a 3/9)."""
    from tests import dora_long_scenario as long

    with FakeWorld(tmp_path / "long", redis_appendonly=False,
                   connections=long.CONNECTIONS) as world:
        estate = long.LongEstate(world)
        daemon = Daemon(world.config(long.overrides()))
        task = asyncio.create_task(daemon.run())
        try:
            await eventually(lambda: daemon.context.status.apps_by_environment
                             == {"PRODUCTION": len(estate.apps)}, timeout=30,
                             what="every app classified")
            for step in estate.script():
                await eventually(lambda: len(world.devlake.deployment_ids(1)) >= step.after,
                                 timeout=30, what=f"{step.after} deployments")
                if step.incident:
                    await eventually(lambda: any(
                        (p.record_id or "").startswith("argocd:")
                        for p in world.devlake.accepted("issue")), timeout=60,
                        what="the Degraded worker's incident")
                step.action()
            await eventually(estate.delivered, timeout=60, what="every record in DevLake")
        finally:
            daemon.request_stop()
            await asyncio.wait_for(task, 30)
        for project, truth in long.TRUTH.items():
            assert numbers(world, project) == truth, project
        model = DoraModel(world.devlake, world.github).project("global")
        assert sorted(model.lead_times_minutes.values()) == [180, 240, 1140, 1260, 1320, 1380,
                                                             1500, 1620]
        assert model.warnings == []
