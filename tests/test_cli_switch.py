"""What a user switching from the reference sees on the command line (the real process).

Each case is a mistake or a silent default from the first hour with the reference's files:
the answer is one clear line, and nothing secret is printed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(cwd: Path, env: dict[str, str], *argv: str,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "doraforwarder", *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.parametrize(("webrca", "note"), [
    ("webrca: {enabled: false}\n",
     "# note: webrca.products is not set: only incidents of product konflux are forwarded, "
     "with component konflux, as the reference does"),
    ("webrca: {products: []}\n",
     "# note: webrca.products is []: every product's incidents are forwarded"),
    ("webrca: {products: [konflux, rhtap]}\n", None),
])
def test_check_config_says_which_incidents_are_forwarded(
        tmp_path: Path, clean_env: dict[str, str], webrca: str, note: str | None) -> None:
    (tmp_path / "c.yaml").write_text(webrca)
    result = run_cli(tmp_path, clean_env, "check-config", "--config", "c.yaml")
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stdout.splitlines() if line.startswith("# note: webrca")]
    assert notes == ([] if note is None else [notes[0]]) and (note is None or
                                                               notes[0].startswith(note))
    effective = "products:\n  - konflux\n" if note and "not set" in note else None
    assert effective is None or effective in result.stdout
