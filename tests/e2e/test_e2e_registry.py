"""Images tagged ``v1.x`` or pinned by digest give the dashboard a SHA tag gives: real process.

The DORA scenario of ``tests/dora_scenario.py`` again, but no image tag carries a
SHA: ``api`` and ``worker`` images are tagged with versions, ``web`` images are
pinned by digest, and no ``github.image_repositories`` rule names their
repositories. Each image is pushed to Debian's ``docker-registry`` on loopback
with the labels a build writes (``org.opencontainers.image.revision`` and
``source``). The daemon reads them over the registry API, and DevLake's
dashboard must show exactly the numbers of the SHA-tagged run.

The registry is behind token auth, as quay.io or Harbor are: ``web`` and
``worker`` pull anonymously through the token service, ``api`` lives under
``private/`` and needs the pull secret, a ``.dockerconfigjson`` file. Neither
the password nor any token issued reaches the daemon's logs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from doraforwarder.commits.oci import OCI_REVISION, OCI_SOURCE
from doraforwarder.keys import Keys
from doraforwarder.testing.world import FakeWorld
from tests.dora_scenario import TRUTH, Estate, overrides
from tests.e2e.conftest import DaemonFactory
from tests.e2e.harness import wait_for
from tests.registry_support import (
    PASSWORD,
    Registry,
    TokenServer,
    docker_config,
    registry_missing,
)
from tests.test_dora_dashboard import numbers

pytestmark = pytest.mark.skipif(registry_missing() is not None,
                                reason=registry_missing() or "")


@pytest.fixture
def tokens(tmp_path: Path) -> Iterator[TokenServer]:
    with TokenServer(tmp_path / "tokens") as started:
        yield started


@pytest.fixture
def registry(tmp_path: Path, tokens: TokenServer) -> Iterator[Registry]:
    with Registry(tmp_path / "registry", auth="token", tokens=tokens) as started:
        yield started


class LabelledEstate(Estate):
    """The scenario's images as a release pipeline names them: versions and digests."""

    def __init__(self, world: FakeWorld, registry: Registry) -> None:
        self.registry = registry
        self.pushed: dict[tuple[str, str], str] = {}
        super().__init__(world)

    def image(self, component: str, sha: str) -> str:  # type: ignore[override]
        key = (component, sha)
        if key not in self.pushed:
            version = f"v1.{len([k for k in self.pushed if k[0] == component])}.0"
            labels = {OCI_REVISION: sha, OCI_SOURCE: f"https://github.com/org/{component}"}
            path = f"private/{component}" if component == "api" else f"org/{component}"
            digest = self.registry.push_image(path, version, labels)
            name = f"{self.registry.host}/{path}"
            self.pushed[key] = f"{name}@{digest}" if component == "web" else f"{name}:{version}"
        return self.pushed[key]


def test_version_tags_and_digests_give_the_sha_tag_numbers(
        world: FakeWorld, store: redis.Redis, daemons: DaemonFactory,
        registry: Registry, tokens: TokenServer, tmp_path: Path) -> None:
    estate = LabelledEstate(world, registry)
    assert all("@sha256:" in ref or ":v1." in ref for ref in estate.pushed.values())
    settings = overrides("head")
    settings["github"] = {"image_repositories": []}
    secret = docker_config(tmp_path / "pull-secret.json", registry.host)
    settings["registry"] = {"enabled": True, "plain_http": [registry.host],
                            "credentials_files": [str(secret)]}
    settings["server"] = {"log_level": "debug"}
    daemon = daemons(settings)
    daemon.wait_ready()
    keys = Keys("dora-metrics")
    wait_for(lambda: all(store.exists(keys.app_state("argocd", name)) for name in estate.apps),
             30, lambda: "apps not baselined")
    estate.play()
    wait_for(lambda: bool(estate.argocd_issue_keys()), 60, lambda: "no ArgoCD incident")
    estate.recover()
    wait_for(estate.delivered, 60, lambda: "records missing in DevLake")
    assert daemon.terminate() == 0
    for project, truth in TRUTH.items():
        assert numbers(world, project) == truth, project
    # The commits came from the labels: the repositories their source labels name.
    commits = {(c["repoUrl"], c["commitSha"]) for p in world.devlake.accepted("deployment")
               for c in p.body.get("deploymentCommits", [])}
    assert ("https://github.com/org/api", estate.m2) in commits
    assert ("https://github.com/org/web", estate.m3) in commits
    assert not world.github.counts().get("search")  # the source labels named them
    # The daemon asked for pull tokens only (the pushes are the test's), with the pull secret.
    pulls = {r["scope"] for r in tokens.requests if "push" not in r["scope"]}
    assert pulls == {"repository:private/api:pull", "repository:org/web:pull",
                     "repository:org/worker:pull"}
    for path in daemon.logs:
        data = path.read_bytes() if path.exists() else b""
        for secret in (PASSWORD, *tokens.issued):
            assert secret.encode() not in data, f"a registry credential leaked into {path.name}"
