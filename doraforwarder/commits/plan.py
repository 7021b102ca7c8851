"""Pure decisions of commit resolution: what to look up, and which answer to trust.

No I/O here: the resolver asks these functions what to do with plain data
(image lists, search candidates, compare page counts) and does the network
work itself, so every rule is tested with a table of cases.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from doraforwarder.commits.images import TagMatcher, parse_image, skipped_image
from doraforwarder.commits.repos import GITHUB_WEB, normalize_repo_url
from doraforwarder.records import DetectedDeployment

ChangeKind = Literal["first", "changed"]
_GIT_SHA = re.compile(r"[0-9a-f]{7,40}", re.IGNORECASE)


def is_git_sha(revision: str) -> bool:
    """Whether a revision names a git commit (7 to 40 hex digits), not a chart version."""
    return bool(_GIT_SHA.fullmatch(revision.strip()))


def row_repo_url(url: str, web_base: str = GITHUB_WEB) -> str | None:
    """How a source's repository is spelled on every row (DevLake groups by exact string).

    A git repository takes the normal form of :func:`normalize_repo_url`
    (``https://github.com/org/repo``: lower case, no ``.git``), the form image
    commits use too; a Helm repository (``https://charts.example.com``, an OCI
    registry) keeps its URL, lower-cased, without a trailing ``/``.
    """
    normal = normalize_repo_url(url, web_base)
    if normal is not None:
        return normal
    text = url.strip().rstrip("/")
    return text.lower() or None


def no_commit_reason(deployment: DetectedDeployment, matcher: TagMatcher, *,
                     labels: bool = False, skip_images: Sequence[str] = ()) -> str:
    """Why a deployment has nothing to send as a commit, for the metric and its dead letter.

    ``no_source``: no gitops source and no image that could give a commit (a
    tag carrying a SHA; when ``labels``, ``registry.enabled``, any image but those
    ``skip_images`` names may read one from its labels); ``unresolved``: there were
    candidates but every one was blacklisted, had no usable repository, or could
    not be found.
    """
    has_image_sha = any(
        matcher.sha_of(reference) or (labels and not skipped_image(reference, skip_images))
        for reference in deployment.images)
    if not deployment.sources and not has_image_sha:
        return "no_source"
    return "unresolved"


@dataclass(frozen=True)
class ImageChange:
    """One image whose commits a deployment shipped.

    ``first``: the image (by name) was not deployed before with a SHA tag, so
    only ``head`` is new. ``changed``: it was, at ``base``; the commits are
    ``compare(base...head)``.
    """

    image: str
    """The reference without tag and digest."""
    kind: ChangeKind
    head: str
    base: str | None = None
    source: str | None = None
    """The repository the image's labels name (``org.opencontainers.image.source``)."""


@dataclass(frozen=True)
class KnownCommit:
    """The commit of an image reference found elsewhere than in its tag (its labels)."""

    sha: str
    source: str | None = None


def commit_of(reference: str, matcher: TagMatcher,
              known: Mapping[str, KnownCommit] | None = None) -> tuple[str, KnownCommit] | None:
    """(image name, commit) of a reference: its tag's SHA first, else what ``known`` says."""
    image = parse_image(reference)
    if image is None:
        return None
    sha = matcher.sha_of_tag(image.tag)
    if sha is not None:
        return image.name, KnownCommit(sha)
    found = (known or {}).get(reference)
    return None if found is None else (image.name, found)


def same_commit(a: str, b: str) -> bool:
    """Two SHAs (either may be abbreviated) naming the same commit."""
    a, b = a.lower(), b.lower()
    return a.startswith(b) or b.startswith(a)


def plan_image_changes(
    images: Iterable[str], previous_images: Iterable[str], matcher: TagMatcher,
    known: Mapping[str, KnownCommit] | None = None,
) -> list[ImageChange]:
    """The image changes of a deployment, in the order of ``images``.

    Images without a commit (no SHA in the tag, nothing ``known`` from their
    labels) contribute nothing; an image whose SHA is the one deployed before
    contributes nothing; an image deployed before under several SHAs (sidecars
    of one image at different tags) has no single base, so only its new commit
    counts. Repeated images are planned once.
    """
    previous: dict[str, list[str]] = {}
    for reference in previous_images:
        found = commit_of(reference, matcher, known)
        if found is None:
            continue
        name, commit = found
        shas = previous.setdefault(name, [])
        if not any(same_commit(commit.sha, old) for old in shas):
            shas.append(commit.sha)
    changes: list[ImageChange] = []
    for name, commit in _with_commits(images, matcher, known):
        before = previous.get(name, [])
        if any(same_commit(commit.sha, old) for old in before):
            continue
        if len(before) == 1:
            changes.append(ImageChange(name, "changed", head=commit.sha, base=before[0],
                                       source=commit.source))
        else:
            changes.append(ImageChange(name, "first", head=commit.sha, source=commit.source))
    return changes


def _with_commits(images: Iterable[str], matcher: TagMatcher,
                  known: Mapping[str, KnownCommit] | None) -> list[tuple[str, KnownCommit]]:
    """(image name, commit) of every image with a commit, in order, each (name, SHA) once."""
    found: list[tuple[str, KnownCommit]] = []
    seen: set[tuple[str, str]] = set()
    for reference in images:
        pair = commit_of(reference, matcher, known)
        if pair is None or (pair[0], pair[1].sha) in seen:
            continue
        seen.add((pair[0], pair[1].sha))
        found.append(pair)
    return found


def plan_head_images(images: Iterable[str], matcher: TagMatcher,
                     known: Mapping[str, KnownCommit] | None = None) -> list[ImageChange]:
    """``head`` rows: every image with a commit (tag or labels), changed or not, once per SHA.

    Unchanged images are included so every repository's chain in DevLake
    stays anchored at what is deployed; no range is looked up (DevLake diffs
    from git itself).
    """
    return [ImageChange(name, "first", head=commit.sha, source=commit.source)
            for name, commit in _with_commits(images, matcher, known)]


@dataclass(frozen=True)
class Candidate:
    """A repository holding a commit, as the commit search answered."""

    repo_url: str
    sha: str
    fork: bool = False


@dataclass(frozen=True)
class RepositoryChoice:
    repo_url: str | None
    reason: str
    """Why: ``found``, ``name-match``, ``none`` or ``ambiguous``."""


def choose_repository(
    candidates: Sequence[Candidate], excluded: Iterable[str], image_name: str
) -> RepositoryChoice:
    """The one repository a SHA belongs to, or none: never a guess.

    Forks and ``excluded`` repositories (the gitops repositories) are skipped.
    If several repositories remain (an abbreviated SHA shared by two
    repositories, or a mirror), the one named like the image's last path
    segment wins when exactly one is; otherwise the SHA stays unresolved.
    """
    skip = {normalize_repo_url(url) for url in excluded}
    remaining: list[str] = []
    for candidate in candidates:
        url = normalize_repo_url(candidate.repo_url)
        if candidate.fork or url is None or url in skip or url in remaining:
            continue
        remaining.append(url)
    if not remaining:
        return RepositoryChoice(None, "none")
    if len(remaining) == 1:
        return RepositoryChoice(remaining[0], "found")
    short_name = image_name.rstrip("/").rsplit("/", 1)[-1].lower()
    named = [url for url in remaining if url.rsplit("/", 1)[-1] == short_name]
    if len(named) == 1:
        return RepositoryChoice(named[0], "name-match")
    return RepositoryChoice(None, "ambiguous")


def compare_pages(total: int, keep: int, per_page: int) -> tuple[int, list[int]]:
    """Which compare pages hold the newest ``keep`` of ``total`` commits.

    Compare lists commits oldest first; a range longer than ``keep`` (the
    ``github.max_commits`` cap) keeps its newest commits, the deployed head
    among them. Returns the absolute index of the first kept commit and the
    1-based page numbers to read.
    """
    keep = min(keep, total)
    first = total - keep
    if total == 0:
        return 0, []
    first_page = first // per_page + 1
    last_page = math.ceil(total / per_page)
    return first, list(range(first_page, last_page + 1))
