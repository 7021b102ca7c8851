"""Repository URLs: one normal form, the blacklist, and image-to-repository rules.

The same repository is written many ways (``https://github.com/Org/Repo.git``,
``http://github.com/org/repo/``, ``git@github.com:org/repo``,
``ssh://git@github.com/org/repo.git``). Blacklists, dedupe and the "skip the
gitops repository" rule compare repositories, so every URL is reduced to
``https://<host>/<owner>/<repo>`` in lower case first (GitHub names are
case-insensitive).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from doraforwarder.config import ImageRepositoryRule

GITHUB_WEB = "https://github.com"
_SCP_FORM = re.compile(r"^(?:[\w.-]+@)?(?P<host>[\w.-]+):(?!//)(?P<path>.+)$")


def normalize_repo_url(url: str, web_base: str = GITHUB_WEB) -> str | None:
    """The normal form of a repository URL, or None when it names no repository.

    ``owner/repo`` alone means a repository on ``web_base`` (github.com or the
    GitHub Enterprise web host).
    """
    text = url.strip()
    if not text:
        return None
    scp = _SCP_FORM.match(text)
    if "://" in text:
        parts = urlsplit(text)
        host, path = (parts.hostname or ""), parts.path
    elif scp is not None and "." in scp.group("host"):
        host, path = scp.group("host"), scp.group("path")
    else:
        first, _, rest = text.partition("/")
        if "." in first and rest:
            host, path = first, rest
        else:
            host, path = urlsplit(web_base).hostname or "", text
    segments = [segment for segment in path.strip("/").split("/") if segment]
    if segments and segments[-1].lower().endswith(".git"):
        segments[-1] = segments[-1][: -len(".git")]
    segments = [segment for segment in segments if segment]
    if not host or len(segments) < 2:
        return None
    return f"https://{host.lower()}/{'/'.join(segments).lower()}"


def web_base_of(api_url: str) -> str:
    """The web address of the GitHub behind ``api_url``.

    ``https://api.github.com`` -> ``https://github.com``; a GitHub Enterprise
    ``https://ghe.example.com/api/v3`` -> ``https://ghe.example.com``. Any other
    address (a test double) is taken to stand for github.com.
    """
    parts = urlsplit(api_url.strip())
    host = (parts.hostname or "").lower()
    if parts.path.rstrip("/").endswith("/api/v3") and host:
        return f"https://{host}"
    return GITHUB_WEB


def owner_and_repo(normalized_url: str, web_base: str) -> tuple[str, str] | None:
    """``(owner, repo)`` when the URL is a repository on this GitHub, else None."""
    base = web_base.rstrip("/").lower() + "/"
    if not normalized_url.startswith(base):
        return None
    segments = normalized_url[len(base) :].split("/")
    if len(segments) != 2:
        return None
    return segments[0], segments[1]


class Blacklist:
    """``argocd.repository_blacklist``: repositories whose commits are never sent.

    An entry naming an owner only (``https://github.com/org``) covers every
    repository of that owner.
    """

    def __init__(self, entries: Iterable[str], web_base: str = GITHUB_WEB) -> None:
        self.repositories: set[str] = set()
        self.owners: set[str] = set()
        for entry in entries:
            normalized = normalize_repo_url(entry, web_base)
            if normalized is not None:
                self.repositories.add(normalized)
                continue
            owner = _normalize_owner(entry, web_base)
            if owner is not None:
                self.owners.add(owner)

    def __contains__(self, repo_url: object) -> bool:
        if not isinstance(repo_url, str):
            return False
        normalized = normalize_repo_url(repo_url)
        if normalized is None:
            return False
        return normalized in self.repositories or normalized.rsplit("/", 1)[0] in self.owners


def _normalize_owner(entry: str, web_base: str) -> str | None:
    text = entry.strip().rstrip("/")
    if "://" not in text:
        return None
    parts = urlsplit(text)
    segments = [segment for segment in parts.path.split("/") if segment]
    if not parts.hostname or len(segments) != 1:
        return None
    return f"https://{parts.hostname.lower()}/{segments[0].lower()}"


@dataclass(frozen=True)
class RepositoryRule:
    prefix: str
    repo_url: str


class ImageRepositories:
    """``github.image_repositories``: ordered image-name prefix -> repository rules.

    The first matching rule wins. A prefix ending in a letter or digit matches
    whole path segments only (``quay.io/org/svc`` covers ``quay.io/org/svc`` and
    ``quay.io/org/svc/sub``, never ``quay.io/org/svc-worker``, whose commits
    would otherwise be looked up in the wrong repository); end the prefix with
    ``/``, ``-`` or ``_`` to match any name that starts with it.
    """

    def __init__(self, rules: Iterable[ImageRepositoryRule], web_base: str = GITHUB_WEB) -> None:
        self.rules: list[RepositoryRule] = []
        self.invalid: list[str] = []
        for rule in rules:
            repo_url = normalize_repo_url(rule.repo, web_base)
            if repo_url is None:
                self.invalid.append(rule.repo)
                continue
            self.rules.append(RepositoryRule(rule.prefix.strip(), repo_url))

    def repository_of(self, image_name: str) -> str | None:
        for rule in self.rules:
            if prefix_matches(rule.prefix, image_name):
                return rule.repo_url
        return None


def prefix_matches(prefix: str, image_name: str) -> bool:
    if not prefix or not image_name.startswith(prefix):
        return False
    if len(image_name) == len(prefix) or not prefix[-1].isalnum():
        return True
    return image_name[len(prefix)] == "/"
