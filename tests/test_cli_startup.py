"""Start-up cost of the command line: a command imports only what it runs.

Importing the daemon pulled in the Kubernetes client, aiohttp and the rest
(about 1 s of CPU per invocation, paid by ``--help`` and by every CLI test's
subprocess). :mod:`doraforwarder.commands.parsers` names each command's module
instead of importing it; these tests run the real ``main`` in a fresh
interpreter and look at ``sys.modules`` afterwards.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import pytest

from doraforwarder.cli import build_parser

PROBE = """
import contextlib, io, json, sys
from doraforwarder.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exit:
        code = exit.code
print(json.dumps({"code": code, "out": out.getvalue(), "modules": sorted(sys.modules)}))
"""

HEAVY = ("kubernetes", "aiohttp", "doraforwarder.daemon", "doraforwarder.argocd.kube")
"""What no command that only reads its arguments or its configuration may import."""
CONFIGURATION = ("pydantic", "structlog", "redis", "doraforwarder.config")
"""What a command that reads no configuration file does not need either."""

# (argv, exit code, what it prints, modules it must not import)
CASES = [
    (["--help"], 0, "usage: doraforwarder", HEAVY + CONFIGURATION),
    (["version"], 0, "doraforwarder ", HEAVY + CONFIGURATION),
    (["status", "--help"], 0, "usage: doraforwarder status", HEAVY + CONFIGURATION),
    (["backfill", "--help"], 0, "usage: doraforwarder backfill", HEAVY + CONFIGURATION),
    (["outbox", "requeue", "12"], 2, "is not an entry id", HEAVY + CONFIGURATION),
    (["check-config", "--config", "small.yaml"], 0, "is valid", HEAVY),
]


@pytest.mark.parametrize(("argv", "code", "prints", "absent"), CASES,
                         ids=[" ".join(case[0]) for case in CASES])
def test_command_imports_only_what_it_runs(tmp_path: Path, clean_env: dict[str, str],
                                           argv: list[str], code: int, prints: str,
                                           absent: tuple[str, ...]) -> None:
    (tmp_path / "small.yaml").write_text('server: {port: "0"}\n'
                                         'storage: {redis: {address: "127.0.0.1:1"}}\n')
    result = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, env=clean_env)
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout)
    assert (probe["code"] or 0) == code, probe["out"]
    assert prints in probe["out"]
    loaded = set(probe["modules"])
    assert not [name for name in absent if name in loaded]


def _argv(command: str, action: str | None) -> list[str]:
    needs = {"backfill": ["--since", "2025-01-01"], "requeue": ["--all"], "drop": ["1-0"]}
    words = [command, *([action] if action else [])]
    return [*words, *needs.get(command, []), *needs.get(action or "", [])]


def _commands() -> list[tuple[str, str | None]]:
    parser = build_parser()
    found: list[tuple[str, str | None]] = []
    for group in parser._subparsers._group_actions:  # type: ignore[union-attr]
        for name, sub in group.choices.items():
            actions = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
            found += [(name, action) for a in actions for action in a.choices] or [(name, None)]
    return found


@pytest.mark.parametrize(("command", "action"), _commands())
def test_every_command_names_a_module_that_handles_it(command: str,
                                                      action: str | None) -> None:
    """A mistyped module name would only show when someone runs that command."""
    args = build_parser().parse_args(_argv(command, action))
    assert args.module.startswith("doraforwarder.commands.")
    assert callable(import_module(args.module).handle)
