"""ResolverPool with a stub resolver and a real redis-server."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from doraforwarder import outbox
from doraforwarder.commits.stage import ResolverPool
from doraforwarder.devlake.plan import DRY_RUN_TARGET
from doraforwarder.keys import DEPLOYMENTS_GROUP
from doraforwarder.records import DetectedDeployment, ResolvedCommit
from doraforwarder.streams import GroupConsumer, read_detected, stage_detected
from tests.devlake_support import (
    RunningService,
    commit,
    detected,
    devlake_section,
    eventually,
    make_context,
)

TEAMS = [{"name": "build", "project_id": "6", "argocd_components": ["build-service"]},
         {"name": "dup", "project_id": "6", "argocd_components": ["other"]}]


class StubResolver:
    """Resolves from a table; can fail a number of times first."""

    def __init__(self, commits: dict[str, list[ResolvedCommit]], failures: int = 0) -> None:
        self.commits = commits
        self.failures = failures
        self.calls: list[str] = []

    async def resolve(self, deployment: DetectedDeployment, stop: asyncio.Event
                      ) -> list[ResolvedCommit]:
        self.calls.append(deployment.id)
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("github exploded")
        return self.commits.get(deployment.id, [commit()])

    async def aclose(self) -> None:
        return None


async def detect(redis: aioredis.Redis, context, *deployments: DetectedDeployment) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        for deployment in deployments:
            stage_detected(pipe, context.keys, deployment)
        await pipe.execute()


async def stream_done(redis: aioredis.Redis, context) -> bool:
    return await redis.xlen(context.keys.deployments_stream) == 0


def test_detected_round_trip() -> None:
    deployment = detected()
    assert read_detected({"deployment": deployment.model_dump_json()}) == deployment


async def test_stages_one_entry_per_target_and_acknowledges(redis_client) -> None:
    context = make_context(redis_client, devlake_section("http://devlake", teams=TEAMS))
    first, second = detected("build-service", n=1), detected("monitoring", n=2)
    await detect(redis_client, context, first, second)
    resolver = StubResolver({})
    async with RunningService(ResolverPool(context, resolver)):
        await eventually(lambda: stream_done(redis_client, context))
        await eventually(lambda: context.metrics.resolve_queue_depth._value.get() == 0)
    items = await outbox.read_stream(redis_client, context.keys.outbox_stream)
    routed = sorted((i.entry.record_id, i.entry.target.key) for i in items if i.entry)
    assert routed == sorted([(first.id, "connection_id:1"), (f"{first.id}@build", "connection_id:6"),
                             (second.id, "connection_id:1")])
    payload = items[0].entry.payload
    assert payload["deploymentCommits"][0]["commitSha"] == "b" * 40
    info = await redis_client.xpending(context.keys.deployments_stream, DEPLOYMENTS_GROUP)
    assert info["pending"] == 0
    assert sorted(resolver.calls) == sorted([first.id, second.id])


async def test_no_commits_becomes_a_dead_letter_with_its_reason_never_silence(
        redis_client) -> None:
    context = make_context(redis_client, devlake_section("http://devlake", teams=TEAMS))
    deployment = detected("build-service")
    await detect(redis_client, context, deployment)
    async with RunningService(ResolverPool(context, StubResolver({deployment.id: []}))):
        await eventually(lambda: stream_done(redis_client, context))
    assert await redis_client.xlen(context.keys.outbox_stream) == 0
    dead = await outbox.read_stream(redis_client, context.keys.dead_stream)
    assert sorted(d.entry.target.key for d in dead) == ["connection_id:1", "connection_id:6"]
    assert {d.fields["reason"] for d in dead} == {"no_commits: no_source"}
    assert dead[0].entry.payload["id"] == deployment.id
    counted = context.metrics.deployments_without_commits.labels("no_source")._value.get()
    assert counted == 1


async def test_invalid_payload_goes_to_dead_letters_per_target(redis_client) -> None:
    context = make_context(redis_client, devlake_section("http://devlake", teams=TEAMS))
    deployment = detected("build-service")
    broken = ResolvedCommit(repo_url="", sha="c" * 40, author_date=deployment.deployed_at)
    await detect(redis_client, context, deployment)
    async with RunningService(ResolverPool(context, StubResolver({deployment.id: [broken]}))):
        await eventually(lambda: stream_done(redis_client, context))
    assert await redis_client.xlen(context.keys.outbox_stream) == 0
    dead = await outbox.read_stream(redis_client, context.keys.dead_stream)
    assert sorted(d.entry.target.key for d in dead) == ["connection_id:1", "connection_id:6"]
    assert all(d.fields["reason"].startswith("invalid_payload") and "repo_url" in
               d.fields["reason"] for d in dead)
    assert dead[0].entry.payload["deploymentCommits"][0]["repoUrl"] == ""


class Crash(Exception):
    pass


async def test_crash_between_resolution_and_staging_is_reclaimed_once(redis_client) -> None:
    context = make_context(redis_client, devlake_section("http://devlake", teams=TEAMS),
                           delivery={"claim_idle": "200ms", "resolvers": 1})
    deployment = detected("build-service")
    await detect(redis_client, context, deployment)

    async def crash(_: DetectedDeployment) -> None:
        raise Crash

    crashed = ResolverPool(context, StubResolver({}), consumer="crashed", after_resolve=crash)
    with pytest.raises(Crash):
        await asyncio.wait_for(crashed.run(asyncio.Event()), 10)
    assert await redis_client.xlen(context.keys.outbox_stream) == 0
    pending = await redis_client.xpending(context.keys.deployments_stream, DEPLOYMENTS_GROUP)
    assert pending["pending"] == 1  # left for a reclaim

    async with RunningService(ResolverPool(context, StubResolver({}), consumer="survivor")):
        await eventually(lambda: stream_done(redis_client, context))
    items = await outbox.read_stream(redis_client, context.keys.outbox_stream)
    assert sorted(i.entry.target.key for i in items) == ["connection_id:1", "connection_id:6"]


async def test_a_resolver_that_lost_its_entry_while_stalled_stages_nothing(redis_client) -> None:
    """Another resolver took the entry over (this one stalled past claim_idle): it is theirs."""
    context = make_context(redis_client, devlake_section("http://devlake", teams=TEAMS),
                           delivery={"claim_idle": "60s", "resolvers": 1})
    await detect(redis_client, context, detected("build-service"))
    stream = context.keys.deployments_stream
    taken = asyncio.Event()

    async def taken_over(_: DetectedDeployment) -> None:
        [row] = await redis_client.xpending_range(stream, DEPLOYMENTS_GROUP, "-", "+", 1)
        await redis_client.xclaim(stream, DEPLOYMENTS_GROUP, "other", 0, [row["message_id"]],
                                  justid=True)
        taken.set()

    pool = ResolverPool(context, StubResolver({}), consumer="stalled", after_resolve=taken_over)
    async with RunningService(pool):
        await eventually(lambda: taken.is_set() and (
            getattr(pool, "lost", 0) == 1 or redis_client.xlen(context.keys.outbox_stream)),
            what="the stalled resolver finished its step")
    assert await redis_client.xlen(context.keys.outbox_stream) == 0
    [row] = await redis_client.xpending_range(stream, DEPLOYMENTS_GROUP, "-", "+", 1)
    assert row["consumer"] == "other"


async def test_resolver_failure_leaves_the_entry_for_a_later_retry(redis_client) -> None:
    context = make_context(redis_client, devlake_section("http://devlake"),
                           delivery={"claim_idle": "100ms", "resolvers": 2})
    deployment = detected()
    await detect(redis_client, context, deployment)
    resolver = StubResolver({}, failures=2)
    async with RunningService(ResolverPool(context, resolver)):
        await eventually(lambda: stream_done(redis_client, context))
    assert resolver.calls == [deployment.id] * 3
    assert await redis_client.xlen(context.keys.outbox_stream) == 1


async def test_slow_resolution_is_not_reclaimed_by_another_worker(redis_client) -> None:
    """Heartbeats keep a long resolution its own, however long it takes.

    The resolver is held until the entry was refreshed six times (two whole
    ``claim_idle`` periods) instead of for a fixed sleep; ``claim_idle`` of
    1.5 s leaves each heartbeat a second of slack on a busy machine.
    """
    context = make_context(redis_client, devlake_section("http://devlake"),
                           delivery={"claim_idle": "1500ms", "resolvers": 3})
    deployment = detected()
    await detect(redis_client, context, deployment)
    release = asyncio.Event()

    class Slow(StubResolver):
        async def resolve(self, deployment, stop):
            self.calls.append(deployment.id)
            await release.wait()
            return [commit()]

    resolver = Slow({})
    pool = ResolverPool(context, resolver)
    refresh = pool.stream.refresh
    refreshes = 0

    async def counting_refresh(entry_ids):
        nonlocal refreshes
        owned = await refresh(entry_ids)
        refreshes += 1
        return owned

    pool.stream.refresh = counting_refresh  # type: ignore[method-assign]
    async with RunningService(pool):
        await eventually(lambda: len(resolver.calls) == 1)
        await eventually(lambda: refreshes >= 6, timeout=60, what="six heartbeats")
        release.set()
        await eventually(lambda: stream_done(redis_client, context))
    assert resolver.calls == [deployment.id]
    assert await redis_client.xlen(context.keys.outbox_stream) == 1


async def test_devlake_disabled_acknowledges_without_resolving(redis_client) -> None:
    context = make_context(redis_client)
    await detect(redis_client, context, detected())
    resolver = StubResolver({})
    async with RunningService(ResolverPool(context, resolver)):
        await eventually(lambda: stream_done(redis_client, context))
    assert resolver.calls == []
    assert await redis_client.xlen(context.keys.outbox_stream) == 0


async def test_dry_run_without_devlake_shows_records_anyway(redis_client) -> None:
    context = make_context(redis_client, dry_run=True)
    await detect(redis_client, context, detected())
    async with RunningService(ResolverPool(context, StubResolver({}))):
        await eventually(lambda: stream_done(redis_client, context))
    items = await outbox.read_stream(redis_client, context.keys.outbox_stream)
    assert [i.entry.target for i in items] == [DRY_RUN_TARGET]


async def test_an_idle_worker_looks_for_reclaims_a_tenth_of_claim_idle_not_every_read(
        redis_client) -> None:
    """Nothing is reclaimable before ``claim_idle``: an idle daemon's resolvers asked
    XAUTOCLAIM on every read (each worker twice a second, most of its idle Redis
    commands); now once per ``claim_idle / 10``, and again at once after one was found."""
    context = make_context(redis_client, devlake_section("http://devlake"),
                           delivery={"claim_idle": "60s", "resolvers": 1})
    stream = GroupConsumer(redis_client, context.keys.deployments_stream, DEPLOYMENTS_GROUP,
                           "idle", claim_idle_s=60.0, read_block_s=0.01)
    await stream.ensure_group()

    async def autoclaims() -> int:
        stats = await redis_client.info("commandstats")
        return int(stats.get("cmdstat_xautoclaim", {}).get("calls", 0))

    before = await autoclaims()
    for _ in range(5):
        assert await stream.take_one() == (None, False)
    assert await autoclaims() - before == 1

    # An entry left pending by a crashed member is still taken over once it may be.
    await detect(redis_client, context, detected())
    crashed = GroupConsumer(redis_client, context.keys.deployments_stream, DEPLOYMENTS_GROUP,
                            "crashed", claim_idle_s=0.05, read_block_s=0.01)
    [(entry_id, _)] = await crashed.read_new(1)
    survivor = GroupConsumer(redis_client, context.keys.deployments_stream, DEPLOYMENTS_GROUP,
                             "survivor", claim_idle_s=0.05, read_block_s=0.01)

    async def reclaimed() -> bool:
        taken, was_reclaimed = await survivor.take_one()
        return taken is not None and taken[0] == entry_id and was_reclaimed

    await eventually(reclaimed, what="the crashed member's entry taken over")


async def test_a_staging_a_failover_lost_is_staged_again(redis_client) -> None:
    """The resolver stages a deployment's outbox entries and removes its stream entry in one
    transaction. A failover that loses that transaction (the replica got every write before
    it, none after: replication is a prefix) leaves the stream entry on the new master,
    still pending for the worker that read it: it is reclaimed after ``claim_idle`` and
    staged again under the same record ids. docs/redis.md, "what a failover can lose"."""
    context = make_context(redis_client, devlake_section("http://devlake", teams=TEAMS),
                           delivery={"claim_idle": "200ms", "resolvers": 1})
    stream, outbox_stream = context.keys.deployments_stream, context.keys.outbox_stream
    deployment = detected("build-service")
    await detect(redis_client, context, deployment)
    replica: list[bytes] = []

    async def replica_has_everything_before_staging(_: DetectedDeployment) -> None:
        if not replica:
            replica.append(await redis_client.dump(stream))

    async def staged() -> list[tuple[str, str]]:
        items = await outbox.read_stream(redis_client, outbox_stream)
        return sorted((i.entry.record_id, i.entry.target.key) for i in items if i.entry)

    async def done() -> bool:
        return await stream_done(redis_client, context) and len(await staged()) == 2

    pool = ResolverPool(context, StubResolver({}),
                        after_resolve=replica_has_everything_before_staging)
    async with RunningService(pool):
        await eventually(done, what="the first staging")
        first = await staged()
        assert await redis_client.xlen(outbox_stream) == 2
        # The failover: the new master holds what the replica had before the staging.
        await redis_client.restore(stream, 0, replica[0], replace=True)
        await redis_client.delete(outbox_stream)
        pending = await redis_client.xpending(stream, DEPLOYMENTS_GROUP)
        assert pending["pending"] == 1
        await eventually(done, what="the entry staged again")
    assert await staged() == first == sorted([(deployment.id, "connection_id:1"),
                                              (f"{deployment.id}@build", "connection_id:6")])
