"""``doctor``'s registry lines: the images the Applications show, read from real registries.

One line per registry that serves an image without a SHA tag: reachable, auth
ok (anonymous or with the pull secret), labels found; or what is wrong, with
the fix. Debian's ``docker-registry`` serves them on loopback (one anonymous,
one behind token auth).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from doraforwarder.commits.oci import OCI_REVISION, OCI_SOURCE
from doraforwarder.config import load_config
from doraforwarder.ops.doctor import Check, render, run_checks
from doraforwarder.testing.argocd_objects import LiveApp
from doraforwarder.testing.world import FakeWorld
from tests.registry_support import PASSWORD, Registry, TokenServer, docker_config, registry_missing

pytestmark = pytest.mark.skipif(registry_missing() is not None,
                                reason=registry_missing() or "")
SHA = "0123456789abcdef0123456789abcdef01234567"


class Setup:
    def __init__(self, root: Path) -> None:
        self.world = FakeWorld(root / "world").start()
        self.tokens = TokenServer(root / "tokens").start()
        self.anonymous = Registry(root / "anonymous").start()
        self.private = Registry(root / "private", auth="token", tokens=self.tokens).start()
        labelled = self.anonymous.push_image(
            "org/app", "v1.4.2", {OCI_REVISION: SHA, OCI_SOURCE: "https://github.com/org/app"})
        self.anonymous.push_image("org/plain", "latest", {})
        self.private.push_image("private/app", "v2", {OCI_REVISION: SHA})
        self.images = {
            "labelled": f"{self.anonymous.host}/org/app@{labelled}",
            "plain": f"{self.anonymous.host}/org/plain:latest",
            "private": f"{self.private.host}/private/app:v2",
            "sha": f"quay.io/org/other:{SHA}",  # a SHA tag: no registry asked
        }

    def close(self) -> None:
        for part in (self.private, self.anonymous, self.tokens, self.world):
            part.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    found = Setup(tmp_path_factory.mktemp("doctor-registry"))
    try:
        yield found
    finally:
        found.close()


async def registry_checks(setup: Setup, images: list[str], tmp_path: Path,
                          **registry: Any) -> dict[str, Check]:
    setup.world.kube.apply(LiveApp("svc-a", images=images).snapshot())
    hosts = [setup.anonymous.host, setup.private.host]
    config = load_config(setup.world.write_config(
        {"registry": {"enabled": True, "plain_http": hosts, **registry}},
        name=f"{tmp_path.name}.yaml"))
    checks = await run_checks(config, kube_probe=_no_kube)
    return {c.name: c for c in checks if c.name.startswith("registry")}


async def _no_kube(config: Any) -> list[Check]:
    return []


async def test_one_line_per_registry(setup: Setup, tmp_path: Path) -> None:
    images = setup.images
    checks = await registry_checks(
        setup, [images["labelled"], images["sha"], images["private"]], tmp_path)
    anonymous, private = (f"registry {setup.anonymous.host}", f"registry {setup.private.host}")
    assert sorted(checks) == sorted([anonymous, private])
    assert checks[anonymous].outcome == "pass"
    assert checks[anonymous].detail == (
        f"reachable, auth ok (anonymous), labels found: {images['labelled']} is "
        f"{SHA[:12]} of https://github.com/org/app (1 image(s) without a SHA tag)")
    assert checks[private].outcome == "fail"
    assert "name a pull secret in registry.credentials_files" in checks[private].detail
    assert checks[private].hint == "name a pull secret in registry.credentials_files"


async def test_pull_secret_and_missing_labels(setup: Setup, tmp_path: Path) -> None:
    images = setup.images
    secret = docker_config(tmp_path / "config.json", setup.private.host)
    checks = await registry_checks(setup, [images["plain"], images["private"]], tmp_path,
                                   credentials_files=[str(secret)])
    private = checks[f"registry {setup.private.host}"]
    assert private.outcome == "pass", private
    assert private.detail.startswith("reachable, auth ok (with credentials), labels found")
    assert "(no source label: commit search)" in private.detail
    plain = checks[f"registry {setup.anonymous.host}"]
    assert plain.outcome == "warn"
    assert "no commit label on" in plain.detail
    text = render(list(checks.values()))
    assert PASSWORD not in text


async def test_nothing_to_check(setup: Setup, tmp_path: Path) -> None:
    checks = await registry_checks(setup, [setup.images["sha"]], tmp_path)
    assert checks["registry"].outcome == "skip"
    assert "has a SHA tag" in checks["registry"].detail


async def test_skipped_images_are_left_out(setup: Setup, tmp_path: Path) -> None:
    """The plain image (a sidecar, say) would warn "no commit label"; skipped, it is not read."""
    checks = await registry_checks(setup, [setup.images["plain"], setup.images["sha"]], tmp_path,
                                   skip_images=["*/org/plain"])
    assert list(checks) == ["registry"] and checks["registry"].outcome == "skip"
    assert "or matches registry.skip_images" in checks["registry"].detail


async def test_unreadable_credentials_file_is_a_failed_line(setup: Setup,
                                                            tmp_path: Path) -> None:
    checks = await registry_checks(setup, [setup.images["labelled"]], tmp_path,
                                   credentials_files=[str(tmp_path / "absent.json")])
    assert checks["registry credentials"].outcome == "fail"
    assert checks[f"registry {setup.anonymous.host}"].outcome == "pass"
