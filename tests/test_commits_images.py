"""Image references and SHA tags: tables of real-looking references."""

from __future__ import annotations

import pytest

from doraforwarder.commits.images import ImageReference, TagMatcher, parse_image, skipped_image

SHA = "3f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a39"
DIGEST = "sha256:" + "ab" * 32
PATTERNS = [r"^on-pr-(?P<sha>[0-9a-f]{40})$", r"^(?P<sha>[0-9a-f]{40})-(arm64|amd64)$",
            r"^build-\d+-(?P<sha>[0-9a-f]{7,12})$"]

# reference, name, tag, digest, sha (with PATTERNS)
CASES = [
    (f"quay.io/org/svc:{SHA}", "quay.io/org/svc", SHA, None, SHA),
    (f"quay.io/org/svc:{SHA[:7]}", "quay.io/org/svc", SHA[:7], None, SHA[:7]),
    (f"quay.io/org/svc:{SHA.upper()}", "quay.io/org/svc", SHA.upper(), None, SHA),
    (f"quay.io/org/svc:{SHA[:12].upper()}", "quay.io/org/svc", SHA[:12].upper(), None, SHA[:12]),
    ("quay.io/org/svc:latest", "quay.io/org/svc", "latest", None, None),
    ("quay.io/org/svc:v1.2.3", "quay.io/org/svc", "v1.2.3", None, None),
    ("quay.io/org/svc", "quay.io/org/svc", None, None, None),
    (f"registry.local:5000/org/svc:{SHA}", "registry.local:5000/org/svc", SHA, None, SHA),
    ("registry.local:5000/org/svc", "registry.local:5000/org/svc", None, None, None),
    (f"localhost:5000/svc:{SHA[:8]}", "localhost:5000/svc", SHA[:8], None, SHA[:8]),
    ("localhost:5000/svc", "localhost:5000/svc", None, None, None),
    (f"quay.io/org/svc:{SHA}@{DIGEST}", "quay.io/org/svc", SHA, DIGEST, SHA),
    (f"quay.io/org/svc@{DIGEST}", "quay.io/org/svc", None, DIGEST, None),
    (f"registry.local:5000/org/svc@{DIGEST}", "registry.local:5000/org/svc", None, DIGEST, None),
    (f"registry.local:5000/a/b/c/svc:{SHA}@{DIGEST}", "registry.local:5000/a/b/c/svc", SHA,
     DIGEST, SHA),
    (f"quay.io/redhat-user-workloads/tenant/app/component:{SHA}",
     "quay.io/redhat-user-workloads/tenant/app/component", SHA, None, SHA),
    (f"nginx:{SHA[:10]}", "nginx", SHA[:10], None, SHA[:10]),
    ("nginx", "nginx", None, None, None),
    ("nginx:1.25", "nginx", "1.25", None, None),
    (f"docker.io/library/nginx:{SHA}", "docker.io/library/nginx", SHA, None, SHA),
    (f"quay.io/org/svc:on-pr-{SHA}", "quay.io/org/svc", f"on-pr-{SHA}", None, SHA),
    (f"quay.io/org/svc:{SHA}-arm64", "quay.io/org/svc", f"{SHA}-arm64", None, SHA),
    (f"quay.io/org/svc:{SHA.upper()}-amd64", "quay.io/org/svc", f"{SHA.upper()}-amd64", None,
     SHA),
    (f"quay.io/org/svc:build-42-{SHA[:9]}", "quay.io/org/svc", f"build-42-{SHA[:9]}", None,
     SHA[:9]),
    (f"quay.io/org/svc:{SHA}-s390x", "quay.io/org/svc", f"{SHA}-s390x", None, None),
    (f"quay.io/org/svc:on-pr-{SHA[:6]}", "quay.io/org/svc", f"on-pr-{SHA[:6]}", None, None),
    ("quay.io/org/svc:abc123", "quay.io/org/svc", "abc123", None, None),  # 6 hex: too short
    (f"quay.io/org/svc:{SHA}0", "quay.io/org/svc", f"{SHA}0", None, None),  # 41 hex: too long
    ("quay.io/org/svc:deadbeefz", "quay.io/org/svc", "deadbeefz", None, None),
    ("quay.io/org/svc:1234567", "quay.io/org/svc", "1234567", None, "1234567"),
    ("  quay.io/org/svc:latest  ", "quay.io/org/svc", "latest", None, None),
    ("quay.io/org/svc:", "quay.io/org/svc", None, None, None),
    ("quay.io:443/org/svc:main", "quay.io:443/org/svc", "main", None, None),
]


@pytest.mark.parametrize(("reference", "name", "tag", "digest", "sha"), CASES,
                         ids=[case[0].strip()[:60] for case in CASES])
def test_parse_image_and_sha(reference: str, name: str, tag: str | None, digest: str | None,
                             sha: str | None) -> None:
    assert parse_image(reference) == ImageReference(name=name, tag=tag, digest=digest)
    assert TagMatcher(PATTERNS).sha_of(reference) == sha


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 25


@pytest.mark.parametrize("reference", ["", "   ", f"@{DIGEST}", ":latest"])
def test_references_without_a_name(reference: str) -> None:
    assert parse_image(reference) is None
    assert TagMatcher().sha_of(reference) is None


@pytest.mark.parametrize(
    ("tag", "sha"),
    [
        (SHA, SHA),
        (f"on-pr-{SHA}", None),  # extra patterns are opt-in
        (f"{SHA}-arm64", None),
        ("latest", None),
        ("v1.2.3", None),
        (None, None),
    ],
)
def test_default_matcher_only_knows_bare_shas(tag: str | None, sha: str | None) -> None:
    assert TagMatcher().sha_of_tag(tag) == sha


def test_digest_is_never_taken_for_a_sha() -> None:
    digest = "sha256:" + SHA[:32] * 2
    assert TagMatcher().sha_of(f"quay.io/org/svc@{digest}") is None


def test_round_trip_to_text() -> None:
    reference = f"registry.local:5000/org/svc:{SHA}@{DIGEST}"
    image = parse_image(reference)
    assert image is not None and str(image) == reference


SKIP = ["*/istio/proxyv2", "quay.io/oauth2-proxy/*", "registry.redhat.io/*/ose-oauth-proxy*"]


@pytest.mark.parametrize(("reference", "patterns", "skipped"), [
    ("docker.io/istio/proxyv2:1.20.1", SKIP, True),
    (f"gcr.io/istio-release/istio/proxyv2@{DIGEST}", SKIP, True),      # digest-pinned
    ("istio/proxyv2:1.20.1", SKIP, False),             # as written: no registry before it
    ("quay.io/oauth2-proxy/oauth2-proxy:v7.5.1", SKIP, True),
    ("quay.io/oauth2-proxy-fork/oauth2-proxy:v7", SKIP, False),
    ("registry.redhat.io/openshift4/ose-oauth-proxy-rhel9:v4.14", SKIP, True),
    ("registry.local:5000/istio/proxyv2:1.20", SKIP, True),           # a port is no tag
    ("quay.io/org/svc:v1.2.3", SKIP, False),
    ("QUAY.IO/OAUTH2-PROXY/x:v1", SKIP, False),        # case-sensitive, as registries are
    ("quay.io/org/svc:v1.2.3", [], False),
    ("docker.io/istio/proxyv2:1.20.1", ["*"], True),
    ("", SKIP, False),
])
def test_skipped_image(reference: str, patterns: list[str], skipped: bool) -> None:
    assert skipped_image(reference, patterns) is skipped
