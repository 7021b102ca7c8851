"""``doctor``: can the daemon read commits from the labels of the images it will see?

The images are those the Applications show now (``status.summary.images``),
read with the source's own Kubernetes client. Only images whose tag carries
no SHA need a registry. One line per registry: reachable, authorized (anonymous
or with the configured credentials), and whether the first of its images
carries a commit label; a registry whose first image fails is tried with its
next ones (at most :data:`TRIES`), so one deleted tag does not fail a registry
that works.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes.client import CustomObjectsApi

from doraforwarder.argocd.kube import build_api_client
from doraforwarder.argocd.listing import iter_applications
from doraforwarder.commits.github import Call
from doraforwarder.commits.images import TagMatcher, parse_image, skipped_image
from doraforwarder.commits.oci import (
    CredentialError,
    commit_from_labels,
    manifest_reference,
    registry_image,
)
from doraforwarder.commits.registry import RegistryClient, RegistryError
from doraforwarder.config import LoadedConfig
from doraforwarder.ops.checks import Check
from doraforwarder.ops.checks import error_text as _error_text

TRIES = 3
"""Images tried per registry before its line fails."""
MAX_APPLICATIONS = 2000
"""Applications read for their images (a bound on the doctor's run, not on the daemon)."""
DEADLINE_S = 60.0
LABEL_HINT = ("build with the labels org.opencontainers.image.revision and "
              "org.opencontainers.image.source (docker/metadata-action and buildah write them), "
              "or name yours in registry.labels; an image that never has them (a sidecar): "
              "registry.skip_images")

ImageSource = Callable[[LoadedConfig], Awaitable[list[str]]]


async def images_in_applications(config: LoadedConfig) -> list[str]:
    """Every image the Applications of ``argocd.namespaces`` show, first seen first."""
    return await asyncio.to_thread(_list_images, config)


def _list_images(config: LoadedConfig) -> list[str]:
    client = build_api_client(config.settings.argocd)
    try:
        api = CustomObjectsApi(client)
        seen: dict[str, None] = {}
        for count, app in enumerate(iter_applications(api, config.settings.argocd.namespaces,
                                                      request_timeout_s=10)):
            if count >= MAX_APPLICATIONS:
                break
            for image in _summary_images(app):
                seen.setdefault(image, None)
        return list(seen)
    finally:
        client.close()  # type: ignore[no-untyped-call]


def _summary_images(app: Any) -> list[str]:
    status = app.get("status") if isinstance(app, dict) else None
    summary = status.get("summary") if isinstance(status, dict) else None
    images = summary.get("images") if isinstance(summary, dict) else None
    return [i for i in images if isinstance(i, str) and i.strip()] \
        if isinstance(images, list) else []


async def check_registries(config: LoadedConfig,
                           image_source: ImageSource | None = None,
                           client: RegistryClient | None = None) -> list[Check]:
    settings = config.settings
    registry = settings.registry
    if not registry.enabled:
        return [Check("registry", "skip", "registry.enabled is false")]
    checks: list[Check] = []
    if client is None:
        try:
            client = RegistryClient.from_config(registry)
        except CredentialError as exc:
            checks.append(Check("registry credentials", "fail", str(exc),
                                "mount the pull Secret's .dockerconfigjson where "
                                "registry.credentials_files names it"))
            client = RegistryClient(registry, [])
    try:
        if not settings.argocd.enabled:
            return [*checks, Check("registry", "skip", "argocd.enabled is false: no image seen")]
        try:
            images = await (image_source or images_in_applications)(config)
        except Exception as exc:
            return [*checks, Check("registry", "skip",
                                   f"cannot list the Applications' images ({_error_text(exc)})")]
        matcher = TagMatcher(settings.github.tag_patterns)
        by_registry: dict[str, list[str]] = {}
        for reference in images:
            parsed = parse_image(reference)
            where = registry_image(parsed.name) if parsed is not None else None
            if where is None or parsed is None or matcher.sha_of(reference) is not None \
                    or manifest_reference(parsed.tag, parsed.digest) is None \
                    or skipped_image(reference, registry.skip_images):
                continue
            by_registry.setdefault(where.registry, []).append(reference)
        if not by_registry:
            return [*checks, Check("registry", "skip",
                                   f"every one of the {len(images)} images seen has a SHA tag "
                                   "or matches registry.skip_images: no registry needed")]
        rules = [(rule.revision, rule.source) for rule in registry.labels]
        results = await asyncio.gather(*(
            _check_one(client, host, references, rules)
            for host, references in sorted(by_registry.items())))
        return [*checks, *results]
    finally:
        await client.aclose()


async def _check_one(client: RegistryClient, host: str, references: list[str],
                     rules: list[tuple[str, str | None]]) -> Check:
    name = f"registry {host}"
    call = Call(deadline=time.time() + DEADLINE_S)
    errors: list[str] = []
    for reference in references[:TRIES]:
        parsed = parse_image(reference)
        assert parsed is not None
        where = registry_image(parsed.name)
        assert where is not None
        try:
            asked = manifest_reference(parsed.tag, parsed.digest)
            assert asked is not None
            digest = parsed.digest or await client.digest_of(where, asked, call)
            labels = (await client.labels_at(where, digest, call)).labels
        except RegistryError as exc:
            errors.append(str(exc))
            continue
        access = "with credentials" if client.has_credentials(where) else "anonymous"
        found = commit_from_labels(labels, rules)
        seen = f"{len(references)} image(s) without a SHA tag"
        if found is None:
            return Check(name, "warn", f"reachable, auth ok ({access}); no commit label on "
                         f"{reference} ({seen})", LABEL_HINT)
        source = f" of {found.source}" if found.source else " (no source label: commit search)"
        return Check(name, "pass", f"reachable, auth ok ({access}), labels found: {reference} "
                     f"is {found.sha[:12]}{source} ({seen})")
    hint = ("name a pull secret in registry.credentials_files"
            if any("pull secret" in e or "refused" in e for e in errors)
            else "check the registry's address, registry.plain_http and the network policy")
    return Check(name, "fail", errors[-1] + (f" (and {len(errors) - 1} more image(s))"
                                             if len(errors) > 1 else ""), hint)
