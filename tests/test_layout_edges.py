"""The shape of the package at its edges, read from the source with ``ast``.

The fakes are the demo's world, not the daemon's: only ``ops/demo.py`` (and
the tests) may import them. aiohttp only serves HTTP; every client is httpx.
Nothing in the runtime package patches with ``unittest.mock``, and the doctor
and its Kubernetes probe do not import each other in a loop.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "doraforwarder"


def modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE.parent).with_suffix("").as_posix().replace("/", ".")
        yield name.removesuffix(".__init__"), ast.parse(path.read_text(encoding="utf-8"))


def imported(tree: ast.Module, module: str) -> set[str]:
    """Every module ``tree`` imports, absolute, including lazy imports inside functions."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: -node.level]
                base = ".".join([*parent, base] if base else parent)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def within(names: set[str], package: str) -> set[str]:
    return {name for name in names if name == package or name.startswith(package + ".")}


MODULES = dict(modules())


def test_the_tree_is_read() -> None:
    assert {"doraforwarder.ops.demo", "doraforwarder.server",
            "doraforwarder.testing.world"} <= set(MODULES)
    demo = imported(MODULES["doraforwarder.ops.demo"], "doraforwarder.ops.demo")
    assert within(demo, "doraforwarder.testing")  # the check sees an import when there is one


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_the_demo_imports_the_fakes(module: str) -> None:
    if module.startswith("doraforwarder.testing") or module == "doraforwarder.ops.demo":
        return
    assert not within(imported(MODULES[module], module), "doraforwarder.testing")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_aiohttp_only_serves(module: str) -> None:
    if module.startswith("doraforwarder.testing") or module == "doraforwarder.server":
        return
    assert not within(imported(MODULES[module], module), "aiohttp")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_mock_in_the_runtime_package(module: str) -> None:
    assert not within(imported(MODULES[module], module), "unittest")


def test_doctor_and_its_probe_form_no_loop() -> None:
    probes = imported(MODULES["doraforwarder.ops.probes"], "doraforwarder.ops.probes")
    assert not within(probes, "doraforwarder.ops.doctor")
    assert "doraforwarder.ops.checks" in probes
