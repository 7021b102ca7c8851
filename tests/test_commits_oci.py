"""The pure rules of commits from image labels: names, labels, platforms, challenges, secrets."""

from __future__ import annotations

import base64
import json

import pytest

from doraforwarder.commits.oci import (
    OCI_REVISION,
    OCI_SOURCE,
    OPENSHIFT_REVISION,
    OPENSHIFT_SOURCE,
    Challenge,
    Credential,
    CredentialError,
    LabeledCommit,
    RegistryImage,
    choose_manifest,
    commit_from_labels,
    credential_for,
    manifest_reference,
    parse_challenge,
    parse_docker_config,
    registry_image,
)

SHA = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.mark.parametrize(("name", "expected"), [
    ("quay.io/org/app", RegistryImage("quay.io", "org/app")),
    ("registry:5000/app", RegistryImage("registry:5000", "app")),
    ("localhost/app", RegistryImage("localhost", "app")),
    ("nginx", RegistryImage("docker.io", "library/nginx")),
    ("bitnami/redis", RegistryImage("docker.io", "bitnami/redis")),
    ("docker.io/nginx", RegistryImage("docker.io", "library/nginx")),
    ("index.docker.io/org/app", RegistryImage("docker.io", "org/app")),
    ("Quay.IO/org/app", RegistryImage("quay.io", "org/app")),
    ("", None),
    ("quay.io//app", None),
])
def test_registry_image(name: str, expected: RegistryImage | None) -> None:
    assert registry_image(name) == expected


def test_docker_hub_api_host() -> None:
    assert registry_image("nginx").api_host == "registry-1.docker.io"  # type: ignore[union-attr]
    assert registry_image("quay.io/a/b").api_host == "quay.io"  # type: ignore[union-attr]


@pytest.mark.parametrize(("labels", "rules", "expected"), [
    ({OCI_REVISION: SHA, OCI_SOURCE: "https://github.com/org/app"}, [],
     LabeledCommit(SHA, "https://github.com/org/app", (OCI_REVISION, OCI_SOURCE))),
    ({OCI_REVISION: SHA.upper()}, [], LabeledCommit(SHA, None, (OCI_REVISION, OCI_SOURCE))),
    ({OPENSHIFT_REVISION: SHA, OPENSHIFT_SOURCE: "https://github.com/org/os"}, [],
     LabeledCommit(SHA, "https://github.com/org/os", (OPENSHIFT_REVISION, OPENSHIFT_SOURCE))),
    # OCI before OpenShift; the user's pairs before both.
    ({OCI_REVISION: SHA, OPENSHIFT_REVISION: OTHER}, [],
     LabeledCommit(SHA, None, (OCI_REVISION, OCI_SOURCE))),
    ({OCI_REVISION: SHA, "vcs-ref": OTHER, "vcs-url": "https://github.com/org/x"},
     [("vcs-ref", "vcs-url")],
     LabeledCommit(OTHER, "https://github.com/org/x", ("vcs-ref", "vcs-url"))),
    ({"vcs-ref": OTHER}, [("vcs-ref", None)], LabeledCommit(OTHER, None, ("vcs-ref", None))),
    # A revision that is no SHA is skipped: the next pair is tried.
    ({OCI_REVISION: "main", OPENSHIFT_REVISION: SHA}, [],
     LabeledCommit(SHA, None, (OPENSHIFT_REVISION, OPENSHIFT_SOURCE))),
    ({OCI_REVISION: "v1.4.2"}, [], None),
    ({OCI_SOURCE: "https://github.com/org/app"}, [], None),
    ({}, [], None),
])
def test_commit_from_labels(labels: dict[str, str], rules: list[tuple[str, str | None]],
                            expected: LabeledCommit | None) -> None:
    assert commit_from_labels(labels, rules) == expected


def _entry(digest: str, platform: str | None, media: str | None = None) -> dict[str, object]:
    entry: dict[str, object] = {"digest": digest,
                                "mediaType": media or "application/vnd.oci.image.manifest.v1+json"}
    if platform:
        parts = platform.split("/")
        entry["platform"] = {"os": parts[0], "architecture": parts[1],
                             **({"variant": parts[2]} if len(parts) > 2 else {})}
    return entry


@pytest.mark.parametrize(("entries", "platform", "expected"), [
    ([_entry("a", "linux/arm64"), _entry("b", "linux/amd64")], "", "b"),
    ([_entry("a", "linux/arm64"), _entry("b", "linux/amd64")], "linux/arm64", "a"),
    ([_entry("a", "linux/arm64/v8"), _entry("b", "linux/amd64")], "linux/arm64", "a"),
    ([_entry("a", "linux/arm64"), _entry("b", "linux/amd64")], "linux/s390x", "b"),
    ([_entry("a", "linux/arm64"), _entry("b", "linux/ppc64le")], "", "a"),
    # Build attestations are never an image.
    ([_entry("att", "unknown/unknown"), _entry("a", "linux/arm64")], "", "a"),
    ([_entry("idx", "linux/amd64", "application/vnd.oci.image.index.v1+json"),
      _entry("a", "linux/arm64")], "", "a"),
    ([_entry("a", None)], "", "a"),
    ([], "", None),
])
def test_choose_manifest(entries: list[dict[str, object]], platform: str,
                         expected: str | None) -> None:
    assert choose_manifest({"manifests": entries}, platform) == expected


@pytest.mark.parametrize(("header", "expected"), [
    ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
     'scope="repository:library/nginx:pull"',
     Challenge("bearer", {"realm": "https://auth.docker.io/token",
                          "service": "registry.docker.io",
                          "scope": "repository:library/nginx:pull"})),
    ('bearer realm="https://q.example/v2/auth", service=q.example',
     Challenge("bearer", {"realm": "https://q.example/v2/auth", "service": "q.example"})),
    ('Basic realm="Registry Realm"', Challenge("basic", {"realm": "Registry Realm"})),
    ("Bearer service=x", None),  # no realm to ask
    ("Negotiate abc", None),
    ("", None),
])
def test_parse_challenge(header: str, expected: Challenge | None) -> None:
    assert parse_challenge(header) == expected


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_docker_config_formats_and_matching() -> None:
    text = json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": _auth("hub", "p1")},
        "quay.io": {"username": "q", "password": "p2"},
        "*.registry.example": {"auth": _auth("wild", "p3:with:colons")},
        "registry.example:5000": {"auth": _auth("port", "p4")},
    }})
    table = parse_docker_config(text, "f")
    assert credential_for("docker.io", [table]) == Credential("hub", "p1")
    assert credential_for("quay.io", [table]) == Credential("q", "p2")
    assert credential_for("eu.registry.example", [table]) == Credential("wild", "p3:with:colons")
    assert credential_for("a.b.registry.example", [table]) is None  # one label per *
    assert credential_for("registry.example:5000", [table]) == Credential("port", "p4")
    assert credential_for("registry.example", [table]) is None
    legacy = parse_docker_config(json.dumps({"quay.io": {"auth": _auth("old", "p5")}}), "g")
    # The first file naming a registry wins.
    assert credential_for("quay.io", [legacy, table]) == Credential("old", "p5")


@pytest.mark.parametrize(("text", "message"), [
    ("not json", "f: not JSON"),
    ("[]", "f: not a JSON object"),
    ('{"auths": []}', "f: 'auths' is not an object"),
    ('{"auths": {"q.io": {}}}', "f: the entry of 'q.io' has no username and password"),
    ('{"auths": {"q.io": {"auth": "!!"}}}',
     "f: the 'auth' of 'q.io' is not base64 of user:password"),
])
def test_docker_config_errors(text: str, message: str) -> None:
    with pytest.raises(CredentialError) as caught:
        parse_docker_config(text, "f")
    assert str(caught.value) == message


@pytest.mark.parametrize(("tag", "digest", "expected"), [
    ("v1.4.2", None, "v1.4.2"),
    (None, None, "latest"),
    ("main_branch-1", None, "main_branch-1"),
    ("v1 x", None, None),
    (".hidden", None, None),
    ("a" * 129, None, None),
    ("v1", "sha256:" + "a" * 64, "sha256:" + "a" * 64),
    (None, "sha256:short", None),
    (None, "sha256:" + "a" * 64 + "/../x", None),
])
def test_manifest_reference(tag: str | None, digest: str | None, expected: str | None) -> None:
    assert manifest_reference(tag, digest) == expected
