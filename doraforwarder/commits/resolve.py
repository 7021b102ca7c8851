"""The commits one deployment shipped: gitops revision plus the image commit ranges.

Rules (``integration.devlake.deployment_commits``):

- Every gitops source gives a row: its revision in its repository; a source
  whose revision is not a commit (a Helm chart version) gives a row with its
  repository URL and that version, so no deployment lacks a row.
- ``head`` (default): every image whose tag carries a SHA gives that commit in
  its repository, changed or not (DevLake diffs each row against the previous
  one of the repository from git itself): no compare call.
- ``range``: for every image whose tag carries a SHA: deployed before under
  another SHA -> ``compare(previous...current)``, oldest first, the newest
  ``github.max_commits`` kept; ``behind``/``diverged`` (rollback, force-push)
  or a base unknown to the repository -> the current commit only; first
  deployment of the image -> the current commit; unchanged -> nothing.
- Repository of a SHA: ``github.image_repositories`` first, else the commit
  search (cached), skipping forks and the gitops repositories. An unresolvable
  SHA is dropped with a warning, never attributed to another repository.
- Repository URLs take one spelling (:func:`~doraforwarder.commits.plan.row_repo_url`);
  commits are deduplicated by (repository, SHA); blacklisted repositories
  are removed (and never queried).

Deadline: ``deployment.detected_at + github.resolve_timeout``. When it passes
the deployment is resolved with what is known; a gitops commit whose details
could not be fetched is still sent, dated at the deployment's start.

Stop: when ``stop`` is set mid-way, :meth:`CommitResolver.resolve` raises
:class:`asyncio.CancelledError` (nothing partial is returned or cached); the
caller leaves the deployment queued in Redis and resolves it after restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx

from doraforwarder.commits.cache import CommitCache
from doraforwarder.commits.github import (
    Call,
    CommitInfo,
    DeadlineExceeded,
    GitHubClient,
    GitHubError,
    NotFound,
)
from doraforwarder.commits.images import TagMatcher, parse_image, skipped_image
from doraforwarder.commits.oci import (
    CredentialError,
    commit_from_labels,
    manifest_reference,
    registry_image,
)
from doraforwarder.commits.plan import (
    Candidate,
    ImageChange,
    KnownCommit,
    choose_repository,
    is_git_sha,
    plan_head_images,
    plan_image_changes,
    row_repo_url,
    same_commit,
)
from doraforwarder.commits.registry import RegistryClient, RegistryError
from doraforwarder.commits.repos import (
    Blacklist,
    ImageRepositories,
    normalize_repo_url,
    owner_and_repo,
    web_base_of,
)
from doraforwarder.context import AppContext
from doraforwarder.logging import get_logger
from doraforwarder.records import DetectedDeployment, GitSource, ResolvedCommit

CONCURRENCY = 4
"""Look-ups of one deployment running at once (gitops sources and images)."""
SKIPPED_LOGGED = 4096
"""Image references remembered as logged once for ``registry.skip_images``."""
T = TypeVar("T")


class CommitResolver:
    """Turns a :class:`DetectedDeployment` into its :class:`ResolvedCommit` list."""

    def __init__(self, context: AppContext, client: httpx.AsyncClient | None = None) -> None:
        settings = context.settings
        github = settings.github
        self.context = context
        self.web_base = web_base_of(github.api_url)
        self.matcher = TagMatcher(github.tag_patterns)
        self.rules = ImageRepositories(github.image_repositories, self.web_base)
        self.blacklist = Blacklist(settings.argocd.repository_blacklist, self.web_base)
        self.max_commits = github.max_commits
        self.rows = settings.integration.devlake.deployment_commits
        self.resolve_timeout = github.resolve_timeout.total_seconds()
        self.github = GitHubClient.for_context(context, client)
        self.cache = CommitCache(
            context.redis, context.keys, context.metrics,
            positive_ttl=github.search_cache_ttl, negative_ttl=github.negative_cache_ttl,
        )
        self.log = get_logger("github")
        self.registry = _registry_client(context)
        self.label_rules = [(rule.revision, rule.source) for rule in settings.registry.labels]
        self.skip_images = settings.registry.skip_images
        self.skipped_seen: set[str] = set()
        """References ``registry.skip_images`` matched, logged once each."""
        for repo in self.rules.invalid:
            self.log.error("github.image_repositories: not a repository URL, rule ignored",
                           repo=repo)
        board = context.github_rate_limits
        if context.config.secrets.github_token is None and not board.announced_unauthenticated:
            board.announced_unauthenticated = True
            self.log.warning(
                "GITHUB_TOKEN is not set: GitHub is queried unauthenticated "
                "(60 requests an hour, public repositories only)",
                api_url=github.api_url,
            )

    async def aclose(self) -> None:
        await self.github.aclose()
        if self.registry is not None:
            await self.registry.aclose()

    async def resolve(
        self, deployment: DetectedDeployment, stop: asyncio.Event
    ) -> list[ResolvedCommit]:
        """The commits of ``deployment``; raises CancelledError once ``stop`` is set."""
        result_key = _result_key(deployment, self.rows)
        cached = await self.cache.resolved(result_key)
        if cached is not None:
            return cached
        if not deployment.sources:
            self.log.warning("deployment has no gitops source: no gitops commit",
                             deployment=deployment.id)
        call = Call(deadline=deployment.detected_at.timestamp() + self.resolve_timeout,
                    stop=stop)
        run = _Resolution(self, deployment, call)
        commits = await run.commits()
        if stop.is_set():
            raise asyncio.CancelledError("stopping")
        await self.cache.store_resolved(result_key, commits)
        self.log.info("deployment commits resolved", deployment=deployment.id,
                      commits=len(commits), images_changed=run.changes)
        return commits


def _registry_client(context: AppContext) -> RegistryClient | None:
    """The registry client when ``registry.enabled``; a bad credentials file means anonymous."""
    config = context.settings.registry
    if not config.enabled:
        return None
    try:
        return RegistryClient.from_config(config)
    except CredentialError as exc:
        get_logger("registry").error("registry credentials unusable: registries are read "
                                     "anonymously", error=str(exc))
        return RegistryClient(config, [])


def _result_key(deployment: DetectedDeployment, mode: str) -> str:
    """The id plus a digest of every input, so a corrected redelivery is resolved anew."""
    inputs = json.dumps([[s.repo_url, s.revision] for s in deployment.sources]
                        + [deployment.images, deployment.previous_images, mode])
    return f"{deployment.id}:{hashlib.sha256(inputs.encode()).hexdigest()[:16]}"


class _Resolution:
    """The work of one :meth:`CommitResolver.resolve` call."""

    def __init__(self, resolver: CommitResolver, deployment: DetectedDeployment,
                 call: Call) -> None:
        self.r = resolver
        self.deployment = deployment
        self.call = call
        self.log = resolver.log.bind(deployment=deployment.id)
        self.gitops_repos = [url for url in (normalize_repo_url(s.repo_url, resolver.web_base)
                                             for s in deployment.sources) if url]
        self._shared: dict[tuple[str, ...], asyncio.Task[Any]] = {}
        """Look-ups in flight, so two images of one commit cost one request."""
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self.changes = 0

    async def commits(self) -> list[ResolvedCommit]:
        units: list[Awaitable[list[ResolvedCommit]]] = [
            self._gitops_commit(source) for source in self.deployment.sources
        ]
        known = await self._labeled_images()
        if self.r.rows == "head":
            changes = plan_head_images(self.deployment.images, self.r.matcher, known)
        else:
            changes = plan_image_changes(self.deployment.images,
                                         self.deployment.previous_images, self.r.matcher,
                                         known)
        self.changes = len(changes)
        units += [self._image_commits(change) for change in changes]
        tasks = [asyncio.ensure_future(self._limited(unit)) for unit in units]
        try:
            results = await asyncio.gather(*tasks)
        finally:
            for task in [*tasks, *self._shared.values()]:
                if not task.done():
                    task.cancel()
                elif not task.cancelled():
                    task.exception()  # retrieved: an error was already handled by its users
        return self._finish([commit for result in results for commit in result])

    async def _limited(self, unit: Awaitable[list[ResolvedCommit]]) -> list[ResolvedCommit]:
        async with self._slots:
            return await unit

    def _finish(self, commits: list[ResolvedCommit]) -> list[ResolvedCommit]:
        kept: list[ResolvedCommit] = []
        for commit in commits:
            if commit.repo_url in self.r.blacklist:
                continue
            if any(k.repo_url == commit.repo_url and same_commit(k.sha, commit.sha)
                   for k in kept):
                continue
            kept.append(commit)
        return kept

    # --- gitops ----------------------------------------------------------------------------
    async def _gitops_commit(self, source: GitSource) -> list[ResolvedCommit]:
        revision = source.revision.strip().lower()
        if not is_git_sha(revision):
            # A chart version: no git commit, but the deployment still needs its row.
            chart_repo = row_repo_url(source.repo_url, self.r.web_base)
            if chart_repo is None or not source.revision.strip():
                self.log.warning("gitops source has no usable repository URL or revision",
                                 repo=source.repo_url, revision=source.revision)
                return []
            self.log.info("gitops revision is not a commit: sent as a chart version row",
                          repo=chart_repo, revision=source.revision)
            return [ResolvedCommit(repo_url=chart_repo, sha=source.revision.strip(),
                                   message=f"{source.chart or 'chart'} {source.revision}",
                                   author_date=self.deployment.started_at)]
        repo = normalize_repo_url(source.repo_url, self.r.web_base)
        if repo is None:
            self.log.warning("gitops source has no usable repository URL",
                             repo=source.repo_url, revision=revision)
            return []
        if repo in self.r.blacklist:
            return []
        problem: str
        where = owner_and_repo(repo, self.r.web_base)
        if where is None:
            problem = "repository is not on the configured GitHub"
        else:
            try:
                info = await self._details(repo, where, revision)
                return [self._resolved(repo, info)]
            except DeadlineExceeded:
                problem = "github.resolve_timeout reached"
            except GitHubError as exc:
                problem = str(exc)
        self.log.warning("gitops commit details unavailable: sent with the deployment start "
                         "as its date and no message", repo=repo, sha=revision, reason=problem)
        return [ResolvedCommit(repo_url=repo, sha=revision, message="",
                               author_date=self.deployment.started_at,
                               url=f"{repo}/commit/{revision}")]

    # --- image labels ------------------------------------------------------------------------
    async def _labeled_images(self) -> dict[str, KnownCommit]:
        """Commits from the labels of the images whose tag carries none (``registry``)."""
        if self.r.registry is None:
            return {}
        current = list(dict.fromkeys(self.deployment.images))
        previous = (list(dict.fromkeys(self.deployment.previous_images))
                    if self.r.rows == "range" else [])
        references = [ref for ref in dict.fromkeys([*current, *previous])
                      if self.r.matcher.sha_of(ref) is None and not self._skipped(ref)]
        if not references:
            return {}
        results = await asyncio.gather(*(
            self._limited_label(ref, ref in current) for ref in references))
        return {ref: found for ref, found in zip(references, results, strict=True)
                if found is not None}

    def _skipped(self, reference: str) -> bool:
        if not skipped_image(reference, self.r.skip_images):
            return False
        if reference not in self.r.skipped_seen:
            if len(self.r.skipped_seen) >= SKIPPED_LOGGED:
                self.r.skipped_seen.clear()  # bounded: a long run may see many sidecar tags
            self.r.skipped_seen.add(reference)
            self.log.debug("image matches registry.skip_images: its labels are not read",
                           image=reference)
        return True

    async def _limited_label(self, reference: str, deployed: bool) -> KnownCommit | None:
        async with self._slots:
            return await self._once(("labels", reference),
                                    lambda: self._label_commit(reference, deployed))

    async def _label_commit(self, reference: str, deployed: bool) -> KnownCommit | None:
        registry = self.r.registry
        assert registry is not None
        image = parse_image(reference)
        where = registry_image(image.name) if image is not None else None
        asked = manifest_reference(image.tag, image.digest) if image is not None else None
        if image is None or where is None or asked is None:
            if deployed:
                self._unresolved("registry", "not an image reference a registry serves",
                                 image=reference)
            return None
        name = f"{where.registry}/{where.repository}"
        try:
            digest = image.digest or await registry.digest_of(where, asked, self.call)
            labels = await self.r.cache.image_labels(name, digest)
            if labels is None:
                labels = (await registry.labels_at(where, digest, self.call)).labels
                await self.r.cache.store_image_labels(name, digest, labels)
        except RegistryError as exc:
            if deployed:
                self._unresolved("registry", "its labels could not be read", image=reference,
                                 error=str(exc))
            else:
                self.log.info("labels of the previous image unreadable: no range for it",
                              image=reference, error=str(exc))
            return None
        found = commit_from_labels(labels, self.r.label_rules)
        if found is None:
            if deployed:
                self._unresolved("no_label", "its tag carries no SHA and its labels no commit",
                                 image=reference, digest=digest)
            return None
        self.log.info("image commit from its labels", image=reference, digest=digest,
                      sha=found.sha, source=found.source, label=found.labels[0])
        return KnownCommit(found.sha, found.source)

    # --- images -------------------------------------------------------------------------------
    async def _image_commits(self, change: ImageChange) -> list[ResolvedCommit]:
        context = {"image": change.image, "sha": change.head}
        try:
            repo = await self._repository_of(change)
            if repo is None:
                return []
            if repo in self.r.blacklist:
                return []
            where = owner_and_repo(repo, self.r.web_base)
            if where is None:
                self._unresolved("not_github", "repository is not on the configured GitHub",
                                 repo=repo, **context)
                return []
            if change.kind == "changed" and change.base is not None:
                ranged = await self._range(repo, where, change)
                if ranged is not None:
                    return ranged
            info = await self._details(repo, where, change.head)
            return [self._resolved(repo, info)]
        except NotFound as exc:
            self._unresolved("not_found", "commit not found in its repository", error=str(exc),
                             **context)
        except DeadlineExceeded:
            if self._known_head(change):
                return self._undetailed(change)
            self._unresolved("timeout", "github.resolve_timeout reached before the commit "
                             "was resolved", **context)
        except GitHubError as exc:
            if self._known_head(change):
                return self._undetailed(change)
            self._unresolved("error", "GitHub refused the look-up", error=str(exc), **context)
        return []

    def _known_head(self, change: ImageChange) -> bool:
        """``head`` rows need only the repository: known from a rule or label, details can wait."""
        return self.r.rows == "head" and self._named_repository(change) is not None

    def _named_repository(self, change: ImageChange) -> str | None:
        """The repository a rule or the image's source label names (rules win)."""
        ruled = self.r.rules.repository_of(change.image)
        if ruled is not None or change.source is None:
            return ruled
        return normalize_repo_url(change.source, self.r.web_base)

    def _undetailed(self, change: ImageChange) -> list[ResolvedCommit]:
        repo = self._named_repository(change)
        assert repo is not None
        self.log.warning("image commit details unavailable: sent without a message",
                         repo=repo, sha=change.head)
        return [ResolvedCommit(repo_url=repo, sha=change.head, message="",
                               author_date=self.deployment.started_at,
                               url=f"{repo}/commit/{change.head}")]

    async def _range(self, repo: str, where: tuple[str, str],
                     change: ImageChange) -> list[ResolvedCommit] | None:
        """The commits of ``base...head``; None when only the head commit should count."""
        assert change.base is not None
        owner, name = where
        try:
            result = await self.r.github.compare(owner, name, change.base, change.head,
                                                 self.r.max_commits, self.call)
        except NotFound:
            self.log.info("previous image commit unknown to the repository: current commit "
                          "only", repo=repo, base=change.base, head=change.head)
            return None
        if result.status == "identical":
            return []
        if result.status != "ahead":
            self.log.info("image went back or sideways: current commit only", repo=repo,
                          status=result.status, base=change.base, head=change.head)
            return None
        if result.truncated:
            self.r.context.metrics.commits_truncated.inc()
            self.log.warning("commit range longer than github.max_commits: newest kept",
                             repo=repo, base=change.base, head=change.head,
                             total=result.total, kept=len(result.commits))
        for info in result.commits:
            await self.r.cache.store_commit(repo, info)
        return [self._resolved(repo, info) for info in result.commits]

    async def _repository_of(self, change: ImageChange) -> str | None:
        named = self._named_repository(change)
        if named is not None:
            return named
        if change.source is not None:
            self.log.warning("image source label is not a repository URL: commit search used",
                             image=change.image, source=change.source)
        candidates = await self._once(("search", change.head), lambda: self._search(change.head))
        choice = choose_repository(candidates, self.gitops_repos, change.image)
        if choice.repo_url is None:
            reason = "ambiguous" if choice.reason == "ambiguous" else "no_repository"
            self._unresolved(reason, "no single repository holds this commit"
                             if reason == "ambiguous" else "no repository found for this commit",
                             image=change.image, sha=change.head,
                             candidates=sorted({c.repo_url for c in candidates}))
        elif choice.reason == "name-match":
            self.log.info("commit found in several repositories: the one named like the "
                          "image chosen", image=change.image, sha=change.head,
                          repo=choice.repo_url)
        return choice.repo_url

    async def _search(self, sha: str) -> list[Candidate]:
        cached = await self.r.cache.candidates(sha)
        if cached is not None:
            return cached
        candidates = await self.r.github.search_commit(sha, self.call)
        await self.r.cache.store_candidates(sha, candidates)
        return candidates

    async def _once(self, key: tuple[str, ...], work: Callable[[], Awaitable[T]]) -> T:
        task = self._shared.get(key)
        if task is None:
            task = asyncio.ensure_future(work())
            self._shared[key] = task
        result: T = await asyncio.shield(task)
        return result

    async def _details(self, repo: str, where: tuple[str, str], sha: str) -> CommitInfo:
        return await self._once(("commit", repo, sha.lower()),
                                lambda: self._fetch_details(repo, where, sha))

    async def _fetch_details(self, repo: str, where: tuple[str, str], sha: str) -> CommitInfo:
        cached = await self.r.cache.commit(repo, sha)
        if cached is not None:
            return cached
        info = await self.r.github.commit(where[0], where[1], sha, self.call)
        await self.r.cache.store_commit(repo, info, sha)
        return info

    def _resolved(self, repo: str, info: CommitInfo) -> ResolvedCommit:
        date = info.author_date
        if date is None:
            self.log.warning("commit has no date: the deployment start is used", repo=repo,
                             sha=info.sha)
            date = self.deployment.started_at
        return ResolvedCommit(repo_url=repo, sha=info.sha, message=info.message,
                              author_date=date, url=info.url or f"{repo}/commit/{info.sha}")

    def _unresolved(self, reason: str, event: str, **context: Any) -> None:
        self.r.context.metrics.commits_unresolved.labels(reason).inc()
        self.log.warning(f"image commit dropped: {event}", **context)
