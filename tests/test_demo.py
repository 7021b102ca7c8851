"""The README's first command: ``doraforwarder demo`` shows deployments and incidents flowing."""

from __future__ import annotations

import json
import re
import subprocess
import sys


def run_demo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "doraforwarder", "demo", "--pace", "0.3", *args],
                          capture_output=True, text=True, timeout=120, env=env)


def test_demo_table(clean_env: dict[str, str]) -> None:
    result = run_demo(env=clean_env)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "7 deployments and 2 incidents forwarded" in out
    assert "store: redis-server (real" in out
    summary = out.split("Summary", 1)[1]
    assert summary.count("build-service     prod-east-1  SUCCESS") == 3
    assert "release           prod-east-1  FAILURE" in summary
    assert re.search(r"image-controller  prod-east-1  SUCCESS  [0-9a-f]{7,8} +2  "
                     r"global, team-build", summary)
    deployed, not_sent = summary.split("Not sent, on purpose", 1)
    assert "prod-west-1" not in deployed  # the same revision on a second cluster is one deployment
    assert re.search(r"ITN-2025-00102 +DONE +global, team-release", deployed)
    assert "deduplicated across clusters" in not_sent
    assert "held until it became Healthy" in not_sent
    assert "components_to_ignore" in not_sent
    assert "(not sent yet: waiting for health)" in out
    assert "Traceback" not in result.stderr


def test_demo_json(clean_env: dict[str, str]) -> None:
    result = run_demo("--json", env=clean_env)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    deployments = {line["payload"]["id"] for line in lines if line["kind"] == "deployment"}
    assert len(deployments) == 7
    issues = [line for line in lines if line["kind"] == "issue"]
    assert {line["payload"]["issueKey"] for line in issues} == {"ITN-2025-00101", "ITN-2025-00102"}
    for line in lines:
        assert line["target"] in {"global", "team-build", "team-release"}


def test_demo_without_redis_server_uses_fakeredis(clean_env: dict[str, str]) -> None:
    import os

    env = dict(clean_env, PATH=os.path.dirname(sys.executable))
    result = run_demo(env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "store: fakeredis (redis-server is not installed)" in result.stdout
    assert "7 deployments and 2 incidents forwarded" in result.stdout
