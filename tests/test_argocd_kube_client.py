"""The Kubernetes client the watchers use: what it says about an unverified API server."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import yaml
from urllib3.exceptions import InsecureRequestWarning

from doraforwarder.argocd.kube import build_api_client
from doraforwarder.config import ArgoCDConfig


def _kubeconfig(path: Path, *, insecure: bool) -> Path:
    cluster: dict[str, object] = {"server": "https://127.0.0.1:6443"}
    if insecure:
        cluster["insecure-skip-tls-verify"] = True
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x"}))
    return path


def test_an_unverified_api_server_is_said_once_in_the_log_not_on_every_request(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Against a real API server with insecure-skip-tls-verify, urllib3 printed two
    plain-text stderr lines per request (136 in a few minutes: every list page, every
    watch)."""
    config = ArgoCDConfig(kubeconfig=str(_kubeconfig(tmp_path / "kc", insecure=True)))
    with warnings.catch_warnings(record=True) as shown:
        build_api_client(config).close()
        for _ in range(3):  # what urllib3 does on each unverified HTTPS request
            warnings.warn("Unverified HTTPS request", InsecureRequestWarning, stacklevel=1)
    assert shown == []
    assert capsys.readouterr().out.count("certificate not verified") == 1


def test_a_verified_api_server_says_nothing(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    config = ArgoCDConfig(kubeconfig=str(_kubeconfig(tmp_path / "kc", insecure=False)))
    with warnings.catch_warnings(record=True):
        build_api_client(config).close()
    assert "certificate not verified" not in capsys.readouterr().out
