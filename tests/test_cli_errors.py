"""Every operator mistake: one line on stderr, no traceback, the right exit code, no secret.

The real CLI runs as a subprocess with fake secrets in its environment; none
of them may appear in anything it prints.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from doraforwarder.commands.common import load_and_configure
from doraforwarder.config import ENV_OVERRIDES, EnvironmentOverrides

SECRETS = {
    "GITHUB_TOKEN": "ghp-fake-secret-0001",
    "DEVLAKE_WEBHOOK_TOKEN": "devlake-fake-secret-0002",
    "OFFLINE_TOKEN": "offline-fake-secret-0003",
}
FILE_SECRETS = ("webrca-file-secret-0004", "redis-file-secret-0005")
DOWN_REDIS = "127.0.0.1:1"

FILES = {
    "good.yaml": f'server: {{port: "0"}}\nstorage: {{redis: {{address: "{DOWN_REDIS}"}}}}\n'
                 "argocd: {kubeconfig: /nonexistent/kubeconfig}\n",
    "syntax.yaml": 'server: {port: "0"\nwebrca: {}\n',
    "unknown.yaml": "server: {prot: 8080}\n",
    "badport.yaml": "server: {port: http}\n",
    "list.yaml": "- a\n- b\n",
    "devlake.yaml": "integration: {devlake: {enabled: true}}\n",
    "regex.yaml": "argocd: {environment_rules: [{app: '(', environment: production}]}\n",
    "duration.yaml": "argocd: {dedupe_window: soon}\n",
    "secrets.yaml": f"webrca: {{token: {FILE_SECRETS[0]}}}\n"
                    f"storage: {{redis: {{password: {FILE_SECRETS[1]}, "
                    f'address: "{DOWN_REDIS}"}}}}\n',
    "kubedir.yaml": f'storage: {{redis: {{address: "{DOWN_REDIS}"}}}}\n'
                    "argocd: {kubeconfig: /tmp}\n",
}

# (argv, extra environment, exit code, text the one stderr line contains)
CASES = [
    (["run", "--config", "missing.yaml"], {}, 2, "cannot read configuration file"),
    (["check-config", "--config", "syntax.yaml"], {}, 2, "syntax.yaml:2:1: not valid YAML"),
    (["--config", "syntax.yaml", "doctor"], {}, 2, "syntax.yaml:2:1"),
    (["check-config", "--config", "unknown.yaml"], {}, 2, "server.prot: unknown key"),
    (["check-config", "--config", "badport.yaml"], {}, 2, "port must be a number"),
    (["check-config", "--config", "list.yaml"], {}, 2, "must hold a mapping"),
    (["check-config", "--config", "devlake.yaml"], {}, 2, "base_url is required"),
    (["check-config", "--config", "regex.yaml"], {}, 2, "invalid regular expression"),
    (["check-config", "--config", "duration.yaml"], {}, 2, "unparseable duration"),
    (["check-config", "--config", "good.yaml"], {"REDIS_PORT": "abc"}, 2,
     "environment variable REDIS_PORT"),
    (["run", "--config", "good.yaml"], {"PORT": "abc"}, 2, "environment variable PORT"),
    (["check-config", "--config", "good.yaml"], {"GITHUB_TOKEN_FILE": "/nonexistent/t"}, 2,
     "GITHUB_TOKEN_FILE names"),
    (["check-config", "--config", "secrets.yaml"], {}, 0, "webrca.token in the configuration"),
    (["backfill", "--config", "good.yaml", "--since", "2025-01-01"], {}, 2,
     "no Kubernetes access: argocd.kubeconfig /nonexistent/kubeconfig does not exist"),
    (["--config", "kubedir.yaml", "backfill", "--since", "2025-01-01"], {}, 2,
     "is not a file"),
    (["backfill", "--config", "good.yaml", "--since", "yesterday"], {}, 2, "is not a date"),
    (["backfill", "--config", "good.yaml"], {}, 2, "--since"),
    (["outbox", "stats", "--config", "good.yaml"], {}, 1, "cannot reach Redis"),
    (["outbox", "--config", "good.yaml", "list"], {}, 1, "cannot reach Redis"),
    (["outbox", "requeue", "--config", "good.yaml"], {}, 2, "one of the arguments"),
    (["outbox", "frobnicate"], {}, 2, "invalid choice"),
    (["status", "--config", "good.yaml"], {}, 1, "cannot reach Redis"),
    (["status", "-o", "yaml"], {}, 2, "invalid choice"),
    (["demo", "--pace", "fast"], {}, 2, "invalid float value"),
    (["doctor", "--log-level", "loud"], {}, 2, "invalid choice"),
    (["--log-format", "xml", "run"], {}, 2, "invalid choice"),
    (["nonsense"], {}, 2, "invalid choice"),
    ([], {}, 2, "required"),
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cli")
    for name, text in FILES.items():
        (directory / name).write_text(text)
    return directory


@pytest.mark.parametrize(("argv", "env", "code", "expected"), CASES,
                         ids=[" ".join(case[0]) or "(none)" for case in CASES])
def test_operator_mistake_is_one_line(workdir: Path, clean_env: dict[str, str],
                                      argv: list[str], env: dict[str, str], code: int,
                                      expected: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "doraforwarder", *argv], cwd=workdir, capture_output=True,
        text=True, timeout=60,
        env={**clean_env, **SECRETS, "KUBECONFIG": "/nonexistent/kubeconfig", **env},
    )
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if not line.startswith("backfill: ")]
    if code == 0:
        assert all("warning" in line for line in lines) and lines, result.stderr
    else:
        assert len(lines) == 1, result.stderr
    assert expected in result.stderr
    for secret in (*SECRETS.values(), *FILE_SECRETS):
        assert secret not in result.stderr + result.stdout


REDIS_SECRET = "redis-fake-secret-0006"
# (variable, bad value, what the one line says); a variable holding a secret never has its
# value (or any part of it) printed.
BAD_ENV = [
    ("PORT", "abc", "environment variable PORT='abc' is not a port number"),
    ("PORT", "70000", "environment variable PORT='70000' is not a port number"),
    ("LOG_LEVEL", "loud", "environment variable LOG_LEVEL='loud' (overrides server.log_level)"),
    ("REDIS_HOST", "redis:6380",
     "environment variable REDIS_HOST='redis:6380' (overrides storage.redis.address)"),
    ("REDIS_HOST", "redis host",
     "environment variable REDIS_HOST='redis host' (overrides storage.redis.address)"),
    ("REDIS_PORT", "abc", "environment variable REDIS_PORT='abc' is not a port number"),
    ("REDIS_PORT", "0", "environment variable REDIS_PORT='0' (overrides storage.redis.address)"),
    ("GITHUB_TOKEN_FILE", "/nonexistent/t", "GITHUB_TOKEN_FILE names '/nonexistent/t'"),
    ("DEVLAKE_WEBHOOK_TOKEN_FILE", "/nonexistent/t", "DEVLAKE_WEBHOOK_TOKEN_FILE names"),
    ("OFFLINE_TOKEN_FILE", "/nonexistent/t", "OFFLINE_TOKEN_FILE names"),
    ("REDIS_SENTINEL_PASSWORD_FILE", "/nonexistent/t", "REDIS_SENTINEL_PASSWORD_FILE names"),
    ("WEBRCA_INTERVAL", "soon",
     "environment variable WEBRCA_INTERVAL='soon' (overrides webrca.interval)"),
]
ANY_VALUE = {
    "ENVIRONMENT": "a free-form label (logged at start), as in the reference",
    "REDIS_PASSWORD": "a secret: any string (quoted into the connection URL)",
    "REDIS_SENTINEL_PASSWORD": "a secret: any string",
    "GITHUB_TOKEN": "a secret: any string", "DEVLAKE_WEBHOOK_TOKEN": "a secret: any string",
    "OFFLINE_TOKEN": "a secret: any string",
}


def test_every_environment_variable_is_in_the_table_or_takes_any_value() -> None:
    names = {name.upper() for name in EnvironmentOverrides.model_fields}
    assert set(ENV_OVERRIDES) <= names
    assert {row[0] for row in BAD_ENV} | set(ANY_VALUE) == names
    assert not {row[0] for row in BAD_ENV} & set(ANY_VALUE)


@pytest.mark.parametrize(("name", "value", "expected"), BAD_ENV,
                         ids=[f"{row[0]}={row[1]}" for row in BAD_ENV])
def test_bad_environment_variable_is_one_line_naming_it(
        workdir: Path, clean_env: dict[str, str], name: str, value: str, expected: str) -> None:
    # The Redis password comes from the environment too: never echoed beside another mistake.
    env = {**clean_env, **SECRETS, "REDIS_PASSWORD": REDIS_SECRET, name: value}
    result = subprocess.run(
        [sys.executable, "-m", "doraforwarder", "check-config", "--config", "good.yaml"],
        cwd=workdir, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2, result.stderr  # as every configuration error
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert expected in result.stderr
    assert f"{name}=" in result.stderr or f"{name} " in result.stderr
    for secret in (*SECRETS.values(), REDIS_SECRET, "fake-secret"):
        assert secret not in result.stderr + result.stdout


def test_redis_password_never_shows_in_a_connection_error(workdir: Path,
                                                          clean_env: dict[str, str]) -> None:
    """A '/' once ended the URL's host early: the part before it showed as a bad port."""
    password = "hunter2-fake/secret"
    result = subprocess.run(
        [sys.executable, "-m", "doraforwarder", "status", "--config", "good.yaml"],
        cwd=workdir, capture_output=True, text=True, timeout=60,
        env={**clean_env, "REDIS_PASSWORD": password})
    assert result.returncode == 1, result.stderr
    assert "cannot reach Redis at redis://:***@" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_file_secrets_warn_the_same_in_check_config_and_run(
        workdir: Path, clean_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "doraforwarder", *argv], cwd=workdir,
                              capture_output=True, text=True, timeout=60,
                              env={**clean_env, "DORAFORWARDER_TEST": "1"})

    checked = run("check-config", "--config", "secrets.yaml")
    warnings = [line.removeprefix("doraforwarder: warning: ")
                for line in checked.stderr.splitlines()]
    assert len(warnings) == 2 and "storage.redis.password" in warnings[1]
    # ``run`` logs the very sentences ``check-config`` prints (one source for both).
    load_and_configure(argparse.Namespace(config=str(workdir / "secrets.yaml"),
                                          log_level="info", log_format="json"))
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in logged if e["level"] == "warning"] == warnings
    for secret in FILE_SECRETS:
        assert secret not in checked.stdout + checked.stderr + json.dumps(logged)


def test_global_options_before_or_after_the_command_and_json_output(
        workdir: Path, clean_env: dict[str, str], redis_server) -> None:
    config = workdir / "live.yaml"
    config.write_text(f'storage: {{redis: {{address: "{redis_server.address}", '
                      'key_prefix: "cli-untouched"}}\n')

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "doraforwarder", *argv], cwd=workdir,
                              capture_output=True, text=True, timeout=60, env=clean_env)

    before = run("--config", str(config), "outbox", "list")
    after = run("outbox", "list", "--config", str(config))
    assert before.returncode == after.returncode == 0, before.stderr + after.stderr
    assert before.stdout == after.stdout
    assert "no outbox yet: nothing was ever staged" in before.stdout
    stats = json.loads(run("outbox", "-o", "json", "stats", "--config", str(config)).stdout)
    assert stats["outbox"] == 0 and stats["dead"] == 0
    status = run("--config", str(config), "status", "-o", "json")
    assert status.returncode == 0, status.stderr
    body = json.loads(status.stdout)
    assert body["outbox_depth"] == 0 and body["last_webrca_poll"] is None
    assert "dependencies" in body["not_available_offline"]
    text = run("status", "--config", str(config))
    assert "not available offline" in text.stdout
