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
