"""``github``: resolving a deployment's commits (image rules, tag patterns, retries).
"""

from __future__ import annotations

import re
from datetime import timedelta

from pydantic import (
    AliasChoices,
    Field,
    field_validator,
)

from doraforwarder.config.fields import (
    Duration,
    Section,
)


class ImageRepositoryRule(Section):
    prefix: str
    repo: str = Field(validation_alias=AliasChoices("repo", "repository", "url"))


class GitHubConfig(Section):
    api_url: str = "https://api.github.com"
    image_repositories: list[ImageRepositoryRule] = Field(default_factory=list)
    tag_patterns: list[str] = Field(default_factory=list)
    max_commits: int = Field(default=250, ge=1, le=10000)
    resolve_timeout: Duration = timedelta(minutes=30)
    timeout_seconds: float = Field(default=30, gt=0)
    search_cache_ttl: Duration = timedelta(days=30)
    negative_cache_ttl: Duration = timedelta(hours=1)
    initial_backoff: Duration = timedelta(seconds=1)
    """First retry delay after a network error or a 5xx (exponential, full jitter)."""
    max_backoff: Duration = timedelta(minutes=5)
    """Longest retry delay; GitHub look-ups retry until ``resolve_timeout``."""

    @field_validator("tag_patterns")
    @classmethod
    def _patterns_have_sha_group(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"tag pattern {pattern!r} is not a regular expression: {exc}"
                ) from None
            if "sha" not in compiled.groupindex:
                raise ValueError(f"tag pattern {pattern!r} needs a named group (?P<sha>...)")
        return value
