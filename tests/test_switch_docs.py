"""What the docs and manifests tell a new user must work as written.

Two first-hour mistakes: the manifests recommended ``api_prefix: "/api"``, which the
configuration refuses (the first apply crash-looped), and the Deployment set
``LOG_LEVEL``/``ENVIRONMENT``, silently overriding the config lines the docs say to edit.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from doraforwarder.webhook_paths import normalize_prefix

ROOT = Path(__file__).resolve().parent.parent
PREFIX = re.compile(r'["`](/[A-Za-z/]*)["`](?! alone)')
PREFIX_LINE = re.compile(r"api_prefix|directly on the server|DevLake server itself|backend itself")


def _documents() -> Iterator[Path]:
    yield ROOT / "README.md"
    for folder in ("manifests", "config", "docs"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".md", ".yaml", ".yml"):
                yield path


def test_every_recommended_api_prefix_is_accepted() -> None:
    wrong = []
    for path in _documents():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not PREFIX_LINE.search(line):
                continue
            for prefix in PREFIX.findall(line):
                if not prefix.startswith(("/api", "/rest")):
                    continue
                try:
                    normalize_prefix(prefix)
                except ValueError:
                    wrong.append(f"{path.relative_to(ROOT)}:{number}: {prefix}")
    assert not wrong, "documented api_prefix values the configuration refuses: " + str(wrong)


@pytest.mark.parametrize("overlay", ["base", "production"])
def test_deployment_does_not_override_the_config_lines_users_edit(overlay: str) -> None:
    path = ROOT / "manifests" / overlay / "deployment.yaml"
    if not path.exists():
        pytest.skip(f"no {path.relative_to(ROOT)}")
    names = set()
    for document in yaml.safe_load_all(path.read_text()):
        spec = ((document or {}).get("spec") or {}).get("template", {}).get("spec", {})
        for container in spec.get("containers") or []:
            names.update(item["name"] for item in container.get("env") or [])
    assert not names & {"LOG_LEVEL", "ENVIRONMENT"}, (
        f"{path.relative_to(ROOT)} sets {sorted(names & {'LOG_LEVEL', 'ENVIRONMENT'})}: "
        "they override server.log_level / server.environment of the ConfigMap")


def test_no_document_says_the_files_webrca_token_is_ignored() -> None:
    """It is used when OFFLINE_TOKEN is unset, as the reference uses it."""
    wrong = [f"{path.relative_to(ROOT)}:{number}"
             for path in _documents()
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if "token:" in line and "ignored" in line and "OFFLINE_TOKEN" in line]
    assert not wrong
