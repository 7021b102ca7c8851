"""Container image references, and the commit SHA a tag carries.

A reference is ``registry[:port]/path/name[:tag][@digest]``. The tag is what
follows the last ``:`` of the *last path segment* only, so a registry port
(``registry:5000/app``) is never taken for a tag, and a digest (``@sha256:...``)
is cut off first. The reference implementation split on the last ``:`` and got
both wrong (defect 7).

Build pipelines tag images with the source commit: the bare SHA (the default
pattern ``^[0-9a-f]{7,40}$``, any case), or the SHA with a prefix or suffix
(``on-pr-<sha>``, ``<sha>-arm64``), which ``github.tag_patterns`` describe with a
named group ``sha``. Tags such as ``latest`` or ``v1.2.3`` carry no commit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

DEFAULT_TAG_PATTERN = r"^[0-9a-f]{7,40}$"
_HEX_SHA = re.compile(r"[0-9a-f]{7,40}", re.IGNORECASE)


@dataclass(frozen=True)
class ImageReference:
    """One parsed image reference.

    ``name`` is the reference without tag and digest (``quay.io/org/svc``): the
    identity of an image across deployments, whatever tag it carries.
    """

    name: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_image(reference: str) -> ImageReference | None:
    """Parse ``reference``; None when it has no name (empty, or only a digest)."""
    text = reference.strip()
    digest: str | None = None
    if "@" in text:
        text, _, digest_part = text.partition("@")
        digest = digest_part or None
    slash = text.rfind("/")
    colon = text.rfind(":")
    tag: str | None = None
    if colon > slash:
        text, tag = text[:colon], text[colon + 1 :] or None
    name = text.rstrip("/")
    if not name:
        return None
    return ImageReference(name=name, tag=tag, digest=digest)


def skipped_image(reference: str, patterns: Sequence[str]) -> bool:
    """Whether a ``registry.skip_images`` glob matches the image's name (no tag, no digest).

    Sidecars and infrastructure images (a service mesh proxy, an auth proxy) never carry
    source labels: without this each of them would cost a registry ``HEAD`` per deployment.
    """
    if not patterns:
        return False
    image = parse_image(reference)
    return image is not None and any(fnmatchcase(image.name, glob) for glob in patterns)


class TagMatcher:
    """Finds the commit SHA in an image tag: the default pattern, then configured ones.

    Patterns are searched (anchor them with ``^``/``$`` to match the whole tag)
    without regard to case; whatever group ``sha`` captures must still look like
    a SHA (7 to 40 hex digits), and is returned in lower case.
    """

    def __init__(self, extra_patterns: Iterable[str] = ()) -> None:
        self.patterns = [
            re.compile(pattern, re.IGNORECASE) for pattern in (DEFAULT_TAG_PATTERN, *extra_patterns)
        ]

    def sha_of_tag(self, tag: str | None) -> str | None:
        if not tag:
            return None
        for pattern in self.patterns:
            match = pattern.search(tag)
            if match is None:
                continue
            candidate = match.groupdict().get("sha", match.group(0))
            if candidate and _HEX_SHA.fullmatch(candidate):
                return candidate.lower()
        return None

    def sha_of(self, reference: str) -> str | None:
        """The SHA carried by the tag of ``reference`` (never by its digest)."""
        image = parse_image(reference)
        return None if image is None else self.sha_of_tag(image.tag)
