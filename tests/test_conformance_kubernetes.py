"""The Kubernetes conformance module, run against the fake API server.

``tests/conformance/test_kubernetes.py`` runs against a cluster the user
names; here it is pointed at :class:`FakeKube` (in a pytest subprocess, as a
user would run it) to prove that it passes where the daemon's needs are met,
fails naming the missing permission where they are not, and is skipped with
one line when nothing is named.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from doraforwarder.ops.permissions import Permission
from doraforwarder.testing.argocd_objects import LiveApp
from doraforwarder.testing.fake_kube import FakeKube
from tests.conftest import ROOT

MODULE = ROOT / "tests" / "conformance" / "test_kubernetes.py"
APPS = "argoproj.io", "applications"


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube() as kube:
        kube.apply(LiveApp("svc-a").snapshot())
        kube.apply(LiveApp("svc-b").snapshot())
        yield kube


def run_module(env: dict[str, str], kube: FakeKube | None = None) -> subprocess.CompletedProcess[str]:
    """pytest on the conformance module; the fake marks bookmarks meanwhile (the real
    server sends one about 2 s before a watch's timeoutSeconds)."""
    done = threading.Event()

    def bookmarks() -> None:
        while kube is not None and not done.wait(0.3):
            kube.bookmark()

    ticker = threading.Thread(target=bookmarks, daemon=True)
    ticker.start()
    try:
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(MODULE)],
            capture_output=True, text=True, timeout=120, env=env, cwd=ROOT, check=False)
    finally:
        done.set()
        ticker.join()


def conformance_env(clean_env: dict[str, str], kube: FakeKube, tmp_path: Path,
                    **extra: str) -> dict[str, str]:
    return {**clean_env,
            "DORAFORWARDER_CONFORMANCE_KUBECONFIG": str(kube.write_kubeconfig(
                tmp_path / "kubeconfig")),
            "DORAFORWARDER_CONFORMANCE_NAMESPACE": "argocd",
            "DORAFORWARDER_CONFORMANCE_WATCH_SECONDS": "2", **extra}


def test_skipped_with_one_line_when_no_cluster_is_named(clean_env: dict[str, str]) -> None:
    result = run_module(clean_env)
    assert result.returncode in (0, 5), result.stdout  # 5: a module skipped whole
    skipped = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skipped) == 1 and "DORAFORWARDER_CONFORMANCE_KUBECONFIG and " \
        "DORAFORWARDER_CONFORMANCE_NAMESPACE" in skipped[0] and "docs/kubernetes.md" in skipped[0]


def test_passes_where_the_daemon_can_work(kube: FakeKube, tmp_path: Path,
                                          clean_env: dict[str, str]) -> None:
    kube.permissions = {Permission(verb, *APPS, "argocd") for verb in ("list", "watch")} | {
        Permission("create", "authentication.k8s.io", "tokenreviews", None),
        Permission("create", "authorization.k8s.io", "subjectaccessreviews", None)}
    result = run_module(conformance_env(clean_env, kube, tmp_path,
                                        DORAFORWARDER_CONFORMANCE_API_AUTH="kubernetes"), kube)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "3 passed" in result.stdout


def test_names_the_missing_permission(kube: FakeKube, tmp_path: Path,
                                      clean_env: dict[str, str]) -> None:
    kube.permissions = {Permission("list", *APPS, "argocd")}
    result = run_module(conformance_env(clean_env, kube, tmp_path), kube)
    assert result.returncode == 1
    assert "missing: watch applications.argoproj.io in namespace argocd" in result.stdout
    assert "kubectl auth can-i watch applications.argoproj.io -n argocd" in result.stdout
    # The CRD is readable; the watch itself is refused, with the API server's message.
    assert "the watch was refused: HTTP 403 applications.argoproj.io is forbidden" in result.stdout
    assert "2 failed, 1 passed" in result.stdout
