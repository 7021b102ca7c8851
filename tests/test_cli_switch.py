"""What a user switching from the reference sees on the command line (the real process).

Each case is a mistake or a silent default from the first hour with the reference's files:
the answer is one clear line, and nothing secret is printed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from doraforwarder.config_file import read_document
from doraforwarder.testing.redis_server import RedisServer


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


DEVLAKE = ('integration: {devlake: {enabled: true, base_url: "http://127.0.0.1:1", '
           'project_id: "1", teams: [{name: build, project_id: "6", token_env: BUILD_KEY}, '
           '{name: web, project_id: "7"}]}}\n')


def test_run_without_a_devlake_key_exits_2_naming_the_variables(
        tmp_path: Path, clean_env: dict[str, str]) -> None:
    (tmp_path / "c.yaml").write_text('server: {port: "0"}\n' + DEVLAKE)
    result = run_cli(tmp_path, clean_env, "run", "--config", "c.yaml")
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "doraforwarder: integration.devlake is enabled but no DevLake API key is set: "
        "DEVLAKE_WEBHOOK_TOKEN (or DEVLAKE_WEBHOOK_TOKEN_FILE) for integration.devlake, "
        "integration.devlake.teams[1] (web); BUILD_KEY (or BUILD_KEY_FILE) for "
        "integration.devlake.teams[0] (build); set it from a Secret, or run with --dry-run"]
    one = run_cli(tmp_path, {**clean_env, "DEVLAKE_WEBHOOK_TOKEN": "k-fake-0008"}, "run",
                  "--config", "c.yaml")
    assert one.returncode == 2 and "BUILD_KEY (or BUILD_KEY_FILE)" in one.stderr
    assert "DEVLAKE_WEBHOOK_TOKEN" not in one.stderr and "k-fake" not in one.stderr


def test_run_warns_at_start_when_devlake_is_disabled(tmp_path: Path,
                                                      clean_env: dict[str, str]) -> None:
    (tmp_path / "c.yaml").write_text(
        'server: {port: "0", host: 127.0.0.1, log_format: json}\n'
        'storage: {redis: {address: "127.0.0.1:1"}}\nargocd: {enabled: false}\n')
    daemon = subprocess.Popen([sys.executable, "-m", "doraforwarder", "run", "--config",
                               "c.yaml"], cwd=tmp_path, env=clean_env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert daemon.stdout is not None
        first = daemon.stdout.readline()  # the very first line, before anything else
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    assert "integration.devlake.enabled is false: nothing will be forwarded to DevLake" \
        in first and '"level": "warning"' in first


BAD_FILES = [
    ("empty", b"", "configuration file c.yaml is empty: write at least {} to run with every "
                   "default"),
    ("comments only", b"# server:\n#   port: 8080\n", "configuration file c.yaml is empty"),
    ("section twice", b'server: {port: "1"}\nwebrca: {}\nserver: {port: "2"}\n',
     "c.yaml:3:1: not valid YAML: key 'server' appears twice (first on line 1)"),
    ("key twice", b"argocd:\n  namespaces: [a]\n  namespaces: [b]\n",
     "c.yaml:3:3: not valid YAML: key 'namespaces' appears twice (first on line 2)"),
    ("binary", bytes(range(256)) * 4,
     "configuration file c.yaml is not text (byte 128 is not UTF-8): is it the YAML file?"),
    ("gzip", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xff",
     "configuration file c.yaml is not text (byte 1 is not UTF-8)"),
    ("control character", b"server:\x00 {}\n",
     "configuration file c.yaml is not text (special characters are not allowed at "
     "character 7)"),
]


@pytest.mark.parametrize(("content", "line"), [case[1:] for case in BAD_FILES],
                         ids=[case[0] for case in BAD_FILES])
def test_check_config_refuses_what_yaml_would_silently_accept(
        tmp_path: Path, clean_env: dict[str, str], content: bytes, line: str) -> None:
    (tmp_path / "c.yaml").write_bytes(content)
    result = run_cli(tmp_path, clean_env, "check-config", "--config", "c.yaml")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [printed] = result.stderr.splitlines()
    assert printed.startswith(f"doraforwarder: {line}"), printed


def test_merge_keys_and_an_explicit_empty_mapping_still_load(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("a: &x {k: 1, j: 2}\nb:\n  <<: *x\n  k: 3\n")
    assert read_document(str(path), ValueError) == {"a": {"k": 1, "j": 2},
                                                    "b": {"k": 3, "j": 2}}
    path.write_text("{}\n")
    assert read_document(str(path), ValueError) == {}


@pytest.mark.parametrize(("argv", "expected"), [
    (("outbox", "drop", "abc"), "doraforwarder outbox drop: argument id: 'abc' is not an entry "
                                "id: ids look like 1733600000000-0"),
    (("outbox", "requeue", "1733600000000"), "doraforwarder outbox requeue: argument id: "
                                             "'1733600000000' is not an entry id"),
    (("outbox", "drop", "-"), "doraforwarder outbox drop: argument id: '-' is not an entry id"),
])
def test_outbox_mistyped_id_is_one_line(tmp_path: Path, clean_env: dict[str, str],
                                        argv: tuple[str, ...], expected: str) -> None:
    result = run_cli(tmp_path, clean_env, *argv)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(expected), line


def test_wrong_redis_password_is_an_authentication_failure(
        tmp_path: Path, clean_env: dict[str, str]) -> None:
    wrong = "wrong-fake-secret-0009"
    with RedisServer(password="right-fake-secret-0010") as server:
        (tmp_path / "c.yaml").write_text(f'storage: {{redis: {{address: "{server.address}"}}}}\n')
        refused = run_cli(tmp_path, {**clean_env, "REDIS_PASSWORD": wrong}, "status",
                          "--config", "c.yaml")
        missing = run_cli(tmp_path, clean_env, "outbox", "stats", "--config", "c.yaml")
    assert refused.returncode == missing.returncode == 1
    assert refused.stderr.splitlines() == [
        f"doraforwarder status: Redis at redis://:***@{server.address}/0 refused the password "
        "(authentication failed): check REDIS_PASSWORD (or storage.redis.password / username)"]
    assert missing.stderr.splitlines() == [
        f"doraforwarder outbox: Redis at redis://{server.address}/0 requires a password "
        "(authentication failed): set REDIS_PASSWORD"]
    for output in (refused, missing):
        assert "fake-secret" not in output.stdout + output.stderr
