"""Redis caches of commit resolution: what GitHub already told us, kept for later.

- Repository candidates of a SHA (the commit search answer): 30 days when
  something was found (a commit never moves), 1 hour when nothing was (it may
  be pushed later, or be private until a token is configured). This is what
  keeps the search API, about 30 requests a minute, out of the hot path.
- Commit details (message, dates, URL) by repository and SHA: immutable.
- Image labels by registry image and digest: immutable, so a registry is
  asked once per image (a tag is turned into its digest with a ``HEAD`` each
  time: tags move).
- The final commit list of a deployment by its id, so a redelivery (a crash
  after resolving, before the outbox write) gets the same answer for free.

A Redis error here is a cache miss (counted in ``redis_errors``), never a
failed deployment.
"""

from __future__ import annotations

import json
from datetime import timedelta

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from doraforwarder.commits.github import CommitInfo
from doraforwarder.commits.plan import Candidate
from doraforwarder.keys import Keys
from doraforwarder.logging import get_logger
from doraforwarder.metrics import Metrics
from doraforwarder.records import ResolvedCommit

RESOLVED_TTL = timedelta(days=1)


class CommitCache:
    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        metrics: Metrics,
        *,
        positive_ttl: timedelta,
        negative_ttl: timedelta,
    ) -> None:
        self._redis, self._keys, self._metrics = redis, keys, metrics
        self.positive_ttl, self.negative_ttl = positive_ttl, negative_ttl
        self.log = get_logger("github")

    async def _get(self, key: str, what: str) -> str | None:
        try:
            value = await self._redis.get(key)
        except RedisError as exc:
            self._failed(what, exc)
            return None
        return None if value is None else str(value)

    async def _set(self, key: str, value: str, ttl: timedelta, what: str) -> None:
        try:
            await self._redis.set(key, value, px=max(1, int(ttl.total_seconds() * 1000)))
        except RedisError as exc:
            self._failed(what, exc)

    def _failed(self, what: str, exc: RedisError) -> None:
        self._metrics.redis_errors.labels(f"github_{what}").inc()
        self.log.warning("Redis cache unavailable, treating as a miss", cache=what,
                         error=str(exc))

    # --- repository candidates of a SHA ----------------------------------------------
    async def candidates(self, sha: str) -> list[Candidate] | None:
        """None: never searched (or expired); ``[]``: searched, nothing found."""
        text = await self._get(self._keys.github_repo_of_sha(sha), "search")
        if text is None:
            return None
        try:
            return [Candidate(str(item["repo_url"]), str(item["sha"]), bool(item["fork"]))
                    for item in json.loads(text)]
        except (ValueError, KeyError, TypeError):
            return None

    async def store_candidates(self, sha: str, candidates: list[Candidate]) -> None:
        text = json.dumps([{"repo_url": c.repo_url, "sha": c.sha, "fork": c.fork}
                           for c in candidates])
        ttl = self.positive_ttl if candidates else self.negative_ttl
        await self._set(self._keys.github_repo_of_sha(sha), text, ttl, "search")

    # --- commit details --------------------------------------------------------------
    async def commit(self, repo_url: str, sha: str) -> CommitInfo | None:
        text = await self._get(self._keys.github_commit(repo_url, sha), "commit")
        if text is None:
            return None
        try:
            return CommitInfo.from_json(text)
        except (ValueError, KeyError, TypeError):
            return None

    async def store_commit(self, repo_url: str, info: CommitInfo, *also: str) -> None:
        """Keep ``info`` under its full SHA and any abbreviation it was asked by."""
        text = info.to_json()
        for sha in {info.sha, *(s.lower() for s in also)}:
            await self._set(self._keys.github_commit(repo_url, sha), text, self.positive_ttl,
                            "commit")

    # --- image labels, by digest ------------------------------------------------------
    async def image_labels(self, image: str, digest: str) -> dict[str, str] | None:
        """The labels of ``image@digest`` as the registry last gave them, if kept."""
        text = await self._get(self._keys.image_labels(image, digest), "labels")
        if text is None:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        return {str(k): str(v) for k, v in data.items()}

    async def store_image_labels(self, image: str, digest: str, labels: dict[str, str]) -> None:
        """Kept as long as commit details: what a digest names never changes.

        Only short values are kept (a label is a name or a URL; a multi-KiB
        one is a build's note, never a commit).
        """
        kept = {k: v for k, v in labels.items() if len(k) <= 256 and len(v) <= 1024}
        await self._set(self._keys.image_labels(image, digest), json.dumps(kept),
                        self.positive_ttl, "labels")

    # --- resolved deployments ----------------------------------------------------------
    async def resolved(self, deployment_id: str) -> list[ResolvedCommit] | None:
        text = await self._get(self._keys.resolved_commits(deployment_id), "resolved")
        if text is None:
            return None
        try:
            return [ResolvedCommit.model_validate(item) for item in json.loads(text)]
        except ValueError:
            return None

    async def store_resolved(self, deployment_id: str, commits: list[ResolvedCommit]) -> None:
        text = json.dumps([commit.model_dump(mode="json") for commit in commits])
        await self._set(self._keys.resolved_commits(deployment_id), text, RESOLVED_TTL,
                        "resolved")
