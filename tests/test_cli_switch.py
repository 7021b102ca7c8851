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


def test_config_is_found_where_the_reference_reads_it(tmp_path: Path,
                                                      clean_env: dict[str, str]) -> None:
    # The order: --config, DORAFORWARDER_CONFIG, configs/config.yaml (the reference's place,
    # in the working directory), config/config.yaml.
    for directory, port in (("configs", "4321"), ("config", "1111")):
        (tmp_path / directory).mkdir()
        (tmp_path / directory / "config.yaml").write_text(f'server: {{port: "{port}"}}\n')
    found = run_cli(tmp_path, clean_env, "check-config")
    assert found.returncode == 0, found.stderr
    assert found.stdout.startswith("# configuration from configs/config.yaml is valid")
    assert "port: '4321'" in found.stdout
    named = run_cli(tmp_path, {**clean_env, "DORAFORWARDER_CONFIG": "config/config.yaml"},
                    "check-config")
    assert "port: '1111'" in named.stdout
    (tmp_path / "configs" / "config.yaml").unlink()
    ours = run_cli(tmp_path, clean_env, "check-config")
    assert ours.stdout.startswith("# configuration from config/config.yaml is valid")


def test_dotenv_in_the_working_directory(tmp_path: Path, clean_env: dict[str, str]) -> None:
    secret = "dotenv-fake-secret-0007"
    (tmp_path / "config.yaml").write_text("webrca: {}\n")
    (tmp_path / ".env").write_text(f"PORT=7777\nWEBRCA_INTERVAL=9m\nOFFLINE_TOKEN={secret}\n")
    read = run_cli(tmp_path, clean_env, "check-config", "--config", "config.yaml")
    assert read.returncode == 0, read.stderr
    assert "port: '7777'" in read.stdout and "interval: 9m" in read.stdout
    assert "OFFLINE_TOKEN: '***'" in read.stdout
    assert secret not in read.stdout + read.stderr
    kept = run_cli(tmp_path, {**clean_env, "PORT": "8888"}, "check-config", "--config",
                   "config.yaml")
    assert "port: '8888'" in kept.stdout  # a variable already set wins over .env
