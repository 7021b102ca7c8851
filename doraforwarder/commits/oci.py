"""Pure decisions of reading commits from image labels: no I/O, table-tested.

- Where an image lives: ``quay.io/org/app`` is repository ``org/app`` on
  ``quay.io``; a first segment without ``.`` or ``:`` (and not ``localhost``)
  is a Docker Hub path, so ``nginx`` is ``library/nginx`` on ``docker.io``
  (whose API is ``registry-1.docker.io``), as every container runtime reads it.
- Which manifest of a multi-platform index: the configured platform, else
  ``linux/amd64``, else the first entry that is an image (attestation
  manifests, ``unknown/unknown``, are never picked). Every platform of one build
  carries the same revision label.
- Which labels: the pairs the user names first, then
  ``org.opencontainers.image.revision`` + ``source``, then OpenShift's
  ``io.openshift.build.commit.id`` + ``source-location``. A revision that is not
  a git SHA (a branch name, a version) is no commit.
- How to authenticate: the ``WWW-Authenticate`` challenge says Bearer (a token
  from ``realm`` for ``service`` and ``scope``) or Basic; the credentials are
  those of ``.dockerconfigjson`` files, matched by registry host the way the
  kubelet matches them (exact host, a ``*.`` wildcard for one label, Docker
  Hub's historical spellings).
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from doraforwarder.commits.plan import is_git_sha

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_DOCKER_HUB_NAMES = {"docker.io", "index.docker.io", "registry-1.docker.io",
                     "registry.hub.docker.com"}

INDEX_TYPES = frozenset({
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
})
MANIFEST_TYPES = frozenset({
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
})
ACCEPT = ", ".join(sorted(INDEX_TYPES | MANIFEST_TYPES))

DEFAULT_PLATFORM = "linux/amd64"

OCI_REVISION = "org.opencontainers.image.revision"
OCI_SOURCE = "org.opencontainers.image.source"
OPENSHIFT_REVISION = "io.openshift.build.commit.id"
OPENSHIFT_SOURCE = "io.openshift.build.source-location"
BUILTIN_LABELS: tuple[tuple[str, str | None], ...] = (
    (OCI_REVISION, OCI_SOURCE),
    (OPENSHIFT_REVISION, OPENSHIFT_SOURCE),
)


@dataclass(frozen=True)
class RegistryImage:
    """An image reference as the registry API names it."""

    registry: str
    """``host[:port]`` as written (``docker.io`` for Docker Hub), the key of config maps."""
    repository: str
    """The path under ``/v2/``: ``org/app``, ``library/nginx``."""

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry


def registry_image(name: str) -> RegistryImage | None:
    """Where the image ``name`` (no tag, no digest) is served from; None when unusable."""
    text = name.strip().strip("/")
    if not text:
        return None
    first, slash, rest = text.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, path = first.lower(), rest
    else:
        registry, path = DOCKER_HUB, text
    if registry in _DOCKER_HUB_NAMES:
        registry = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"
    if not path or any(not part for part in path.split("/")):
        return None
    return RegistryImage(registry, path)


_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")


def manifest_reference(tag: str | None, digest: str | None) -> str | None:
    """What to ask the registry for: the digest, else the tag (``latest`` when none).

    None when the one that would be used is malformed (the distribution spec's
    grammar), so no odd string ever reaches a URL.
    """
    if digest is not None:
        return digest if _DIGEST.fullmatch(digest) else None
    tag = tag or "latest"
    return tag if _TAG.fullmatch(tag) else None


@dataclass(frozen=True)
class LabeledCommit:
    """The commit an image's labels name, and the repository if they name one."""

    sha: str
    source: str | None
    labels: tuple[str, str | None]
    """Which pair of label names gave it."""


def commit_from_labels(labels: Mapping[str, str],
                       rules: Iterable[tuple[str, str | None]] = ()) -> LabeledCommit | None:
    """The first label pair (``rules``, then the built-in ones) whose revision is a SHA."""
    for revision_label, source_label in (*rules, *BUILTIN_LABELS):
        revision = str(labels.get(revision_label) or "").strip().lower()
        if not is_git_sha(revision):
            continue
        source = str(labels.get(source_label) or "").strip() if source_label else ""
        return LabeledCommit(revision, source or None, (revision_label, source_label))
    return None


def config_labels(config: Any) -> dict[str, str]:
    """``config.Labels`` of an image config blob (Docker and OCI write the same key)."""
    if not isinstance(config, dict):
        return {}
    inner = config.get("config")
    labels = inner.get("Labels") if isinstance(inner, dict) else None
    if not isinstance(labels, dict):
        return {}
    return {str(k): str(v) for k, v in labels.items() if isinstance(v, str | int | float)}


def manifest_annotations(document: Any) -> dict[str, str]:
    """A manifest's or index's ``annotations`` (OCI builds may put the revision there too)."""
    found = document.get("annotations") if isinstance(document, dict) else None
    if not isinstance(found, dict):
        return {}
    return {str(k): str(v) for k, v in found.items() if isinstance(v, str)}


def _platform_of(entry: Mapping[str, Any]) -> str:
    platform = entry.get("platform")
    if not isinstance(platform, dict):
        return ""
    parts = [str(platform.get("os") or ""), str(platform.get("architecture") or "")]
    if platform.get("variant"):
        parts.append(str(platform["variant"]))
    return "/".join(parts)


def choose_manifest(index: Any, platform: str = "") -> str | None:
    """The digest of the index entry to read: ``platform``, else linux/amd64, else any image.

    ``linux/arm64`` matches an entry ``linux/arm64/v8`` (a variant not asked for
    is not required); ``unknown/unknown`` entries (build attestations) are skipped.
    """
    entries = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(entries, list):
        return None
    images: list[tuple[str, str]] = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
            continue
        kind = entry.get("mediaType")
        if kind is not None and kind not in MANIFEST_TYPES:
            continue
        found = _platform_of(entry)
        if found.startswith("unknown/"):
            continue
        images.append((found, entry["digest"]))
    for wanted in (platform, DEFAULT_PLATFORM):
        if not wanted:
            continue
        for found, digest in images:
            if found == wanted or found.startswith(wanted + "/"):
                return digest
    return images[0][1] if images else None


@dataclass(frozen=True)
class Challenge:
    scheme: str
    """``bearer`` or ``basic`` (lower case)."""
    params: dict[str, str]


_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


def parse_challenge(header: str) -> Challenge | None:
    """``WWW-Authenticate: Bearer realm="...",service="...",scope="..."`` or ``Basic ...``."""
    text = header.strip()
    scheme, _, rest = text.partition(" ")
    scheme = scheme.lower()
    if scheme not in ("bearer", "basic"):
        return None
    params: dict[str, str] = {}
    position = 0
    while position < len(rest):
        match = _PARAM.match(rest, position)
        if match is None or match.end() == position:
            break
        value = match.group(2) if match.group(2) is not None else match.group(3)
        params[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", value or "")
        position = match.end()
    if scheme == "bearer" and not params.get("realm"):
        return None
    return Challenge(scheme, params)


@dataclass(frozen=True)
class Credential:
    username: str
    password: str

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


class CredentialError(ValueError):
    """A credentials file that cannot be used; the message names the file, never a value."""


def _host_key(entry: str) -> str:
    """A ``.dockerconfigjson`` key reduced to ``host[:port]``, Docker Hub's spellings as one."""
    text = entry.strip()
    host = urlsplit(text).netloc if "://" in text else text.split("/", 1)[0]
    host = host.lower()
    return DOCKER_HUB if host in _DOCKER_HUB_NAMES else host


def parse_docker_config(text: str, where: str) -> dict[str, Credential]:
    """Registry host (or ``*.`` pattern) -> credential of one credentials file.

    Both formats the kubelet reads: ``{"auths": {...}}`` (``.dockerconfigjson``)
    and the bare map of ``.dockercfg``. Each entry has ``auth``
    (base64 ``user:password``) or ``username`` + ``password``.
    """
    try:
        data = json.loads(text)
    except ValueError:
        raise CredentialError(f"{where}: not JSON") from None
    if not isinstance(data, dict):
        raise CredentialError(f"{where}: not a JSON object")
    auths = data.get("auths", data)
    if not isinstance(auths, dict):
        raise CredentialError(f"{where}: 'auths' is not an object")
    found: dict[str, Credential] = {}
    for key, entry in auths.items():
        if not isinstance(entry, dict):
            raise CredentialError(f"{where}: the entry of {key!r} is not an object")
        username, password = entry.get("username"), entry.get("password")
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                decoded = base64.b64decode(entry["auth"], validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise CredentialError(f"{where}: the 'auth' of {key!r} is not base64 of "
                                      "user:password") from None
            username, _, password = decoded.partition(":")
        if not isinstance(username, str) or not isinstance(password, str) or not username:
            raise CredentialError(f"{where}: the entry of {key!r} has no username and password")
        found[_host_key(key)] = Credential(username, password)
    return found


def credential_for(registry: str, credentials: Sequence[Mapping[str, Credential]]
                   ) -> Credential | None:
    """The credential of ``registry`` (``host[:port]``): exact host first, then a wildcard.

    Files are searched in their configured order; the first match wins.
    """
    host = _host_key(registry)
    for table in credentials:
        if host in table:
            return table[host]
    for table in credentials:
        for pattern, credential in table.items():
            if "*" in pattern and _wildcard(pattern, host):
                return credential
    return None


def _wildcard(pattern: str, host: str) -> bool:
    """``*.example.com`` matches ``a.example.com`` (one label per ``*``), ports must agree."""
    pattern_labels, host_labels = pattern.split("."), host.split(".")
    if len(pattern_labels) != len(host_labels):
        return False
    return all(fnmatch.fnmatchcase(h, p) for p, h in zip(pattern_labels, host_labels, strict=True))
