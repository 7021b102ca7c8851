"""The locked dependency set: what CI, the README's test command and the image install.

A fresh clone once failed CI because nothing pinned the dependencies and a new ``redis`` release
changed its type hints. These tests keep the lock whole: every dependency ``pyproject.toml``
declares is pinned, with hashes, at a version its specifier allows, and each installer uses it.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
DEV_LOCK = ROOT / "requirements" / "dev.lock"
RUNTIME_LOCK = ROOT / "requirements" / "runtime.lock"

_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s\\]+)\s*\\?$")


def _pins(lock: Path) -> dict[str, tuple[str, int]]:
    """``name -> (version, number of hashes)`` for every pinned package of a lock file."""
    pins: dict[str, tuple[str, int]] = {}
    current: str | None = None
    for line in lock.read_text().splitlines():
        match = _PIN.match(line)
        if match:
            current = canonicalize_name(match.group(1))
            pins[current] = (match.group(2), 0)
        elif current and line.strip().startswith("--hash=sha256:"):
            version, hashes = pins[current]
            pins[current] = (version, hashes + 1)
        elif line and not line.startswith(" "):
            current = None
    return pins


def _declared() -> tuple[list[Requirement], list[Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = [Requirement(r) for r in project["dependencies"]]
    extras = [Requirement(r) for name in ("dev", "demo")
              for r in project["optional-dependencies"][name]]
    return runtime, extras


@pytest.mark.parametrize(("lock", "kind"), [(DEV_LOCK, "dev"), (RUNTIME_LOCK, "runtime")])
def test_every_declared_dependency_is_pinned_with_hashes_within_its_specifier(
        lock: Path, kind: str) -> None:
    runtime, extras = _declared()
    wanted = runtime + (extras if kind == "dev" else [])
    pins = _pins(lock)
    assert pins, f"{lock} pins nothing"
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is declared but not in {lock.name}"
        version, _hashes = pins[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock.name} pins {name}=={version}, outside {requirement.specifier}")
    assert all(hashes >= 1 for _, hashes in pins.values()), f"{lock.name}: a pin without a hash"


def test_dev_lock_holds_the_build_backend_for_an_offline_editable_install() -> None:
    pins = _pins(DEV_LOCK)
    assert "hatchling" in pins
    assert "editables" in pins


def test_runtime_lock_pins_the_same_versions_as_the_dev_lock() -> None:
    dev, runtime = _pins(DEV_LOCK), _pins(RUNTIME_LOCK)
    assert set(runtime) <= set(dev)
    differing = {n: (v, dev[n][0]) for n, (v, _) in runtime.items() if dev[n][0] != v}
    assert not differing, f"the image and the tests would run different versions: {differing}"


def test_ci_readme_and_image_install_the_lock() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "--require-hashes -r requirements/dev.lock" in ci
    assert "DORAFORWARDER_DEPS" in ci  # the deliberate way to try the newest versions
    readme = (ROOT / "README.md").read_text()
    assert "--require-hashes -r requirements/dev.lock" in readme
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes -r requirements/runtime.lock" in dockerfile
