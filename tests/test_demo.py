"""The README's first command: ``doraforwarder demo`` shows deployments and incidents flowing."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.conftest import SECRET_ENV


def run_demo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "doraforwarder", "demo", "--pace", "0.3", *args],
                          capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def table_run() -> subprocess.CompletedProcess[str]:
    """One run of the table output, shared by the tests that read it."""
    return run_demo(env={k: v for k, v in os.environ.items() if k not in SECRET_ENV})


def test_demo_table(table_run: subprocess.CompletedProcess[str]) -> None:
    result = table_run
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "7 deployments and 2 incidents forwarded" in out
    assert "store: redis-server (real" in out
    summary = out.split("Summary", 1)[1]
    assert summary.count("build-service     prod-east-1  SUCCESS") == 3
    assert "release           prod-east-1  FAILURE" in summary
    assert re.search(r"image-controller  prod-east-1  SUCCESS  [0-9a-f]{7,8} "
                     r"\d{4}-\d\d-\d\d 14:00 +2  global, team-build", summary)
    deployed, not_sent = summary.split("Not sent, on purpose", 1)
    assert "prod-west-1" not in deployed  # the same revision on a second cluster is one deployment
    # each sync carries its own times: seven deployments, seven deployment times
    times = re.findall(r"  (?:SUCCESS|FAILURE) +[0-9a-f]{8} (\d{4}-\d\d-\d\d \d\d:\d\d) ",
                       deployed)
    assert len(times) == 7 and len(set(times)) == 7 and times == sorted(times)
    assert re.search(r"ITN-2025-00102 +DONE +\S+ 11:20 \S+ 13:00 +global, team-release",
                     deployed)
    assert "deduplicated across clusters" in not_sent
    assert "held until it became Healthy" in not_sent
    assert "components_to_ignore" in not_sent
    assert "(not sent yet: waiting for health)" in out
    assert "Traceback" not in result.stderr


# The script implies: SUCCESS PRODUCTION deployments (the failed release sync does not count)
# globally 6 on 3 days, team-build's components 4 on 2 days, team-release 1; the four
# build-service pull requests of day 2 ship on day 3 (lead times 1145, 1265, 1380, 1500 min:
# lower median 1265); ITN-2025-00102 follows release's deployment (CFR), ITN-2025-00101 comes
# before any deployment (restore time only): restore 45 and 100 min -> 45, recovery 120.
DORA_ROWS = {
    "global": (6, 3, "1265 min (21h05), 4 PRs", "1/6 = 17%", "45 min", "120 min (2h00)"),
    "team-build": (4, 2, "1265 min (21h05), 4 PRs", "0/4 = 0%", "-", "-"),
    "team-release": (1, 1, "-", "1/1 = 100%", "45 min", "120 min (2h00)"),
}


def test_demo_prints_the_dora_numbers_per_project(
        table_run: subprocess.CompletedProcess[str]) -> None:
    result = table_run
    assert result.returncode == 0, result.stdout + result.stderr
    table = result.stdout.split("DORA numbers per DevLake project", 1)[1]
    rows = {}
    for line in table.splitlines()[2:]:
        match = re.match(r"  (\S+) +(\d+) +(\d+)  (.+?) {2,}(\d+/\d+ = \d+%) +(\S.*?) {2,}(\S.*)$",
                         line)
        if match:
            name, deployments, days, lead, rate, restore, recovery = match.groups()
            rows[name] = (int(deployments), int(days), lead.strip(), rate, restore, recovery)
    assert rows == DORA_ROWS
    modelled = table.splitlines()[-1]
    assert "DORA dashboard would show" in modelled and "GitHub connection" in modelled
    # 7 forwarded, 6 in the table: the reader is told the failed sync is the difference,
    # and that a median of an even count is DevLake's lower one.
    assert ("  global: 7 deployments forwarded, 6 counted: the 1 FAILURE (release: the "
            "failed sync) is sent for the record and left out by DORA, which counts SUCCESS "
            "deployments only") in table
    assert "  team-release: 2 deployments forwarded, 1 counted" in table
    assert "team-build: " not in table  # nothing to explain there
    assert "Medians are DevLake's: the lower median" in table


def test_demo_json(clean_env: dict[str, str]) -> None:
    result = run_demo("--json", env=clean_env)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    deployments = {line["payload"]["id"] for line in lines if line["kind"] == "deployment"}
    # a team's copy carries the team's name (its own id in DevLake), the global one does not
    assert all(i.endswith(f"@{line['target']}") == (line["target"] != "global")
               for line in lines if line["kind"] == "deployment"
               for i in [line["payload"]["id"]])
    assert len({i.split("@")[0] for i in deployments}) == 7
    issues = [line for line in lines if line["kind"] == "issue"]
    assert {line["payload"]["issueKey"] for line in issues} == {"ITN-2025-00101", "ITN-2025-00102"}
    for line in lines:
        if line["kind"] != "dora":
            assert line["target"] in {"global", "team-build", "team-release"}
    dora = {line["project"]: line for line in lines if line["kind"] == "dora"}
    assert lines[-len(dora):] == list(dora.values())  # the numbers come last
    assert {name: (d["deployments"], d["deployment_days"], d["deployments_with_incident"])
            for name, d in dora.items()} == {name: (row[0], row[1], int(row[3].split("/")[0]))
                                             for name, row in DORA_ROWS.items()}
    assert dora["global"]["median_lead_time_minutes"] == 1265
    assert sorted(dora["team-build"]["lead_times_minutes"].values()) == [1145, 1265, 1380, 1500]
    assert dora["team-release"]["change_failure_rate"] == 1.0
    assert dora["global"]["median_time_to_restore_minutes"] == 45
    assert all(d["modelled"] is True and d["warnings"] == [] for d in dora.values())


def test_demo_without_redis_server_uses_fakeredis(clean_env: dict[str, str]) -> None:
    env = dict(clean_env, PATH=os.path.dirname(sys.executable))
    result = run_demo(env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "store: fakeredis (redis-server is not installed)" in result.stdout
    assert "7 deployments and 2 incidents forwarded" in result.stdout


def test_demo_waits_for_the_baselines_of_a_slow_starting_daemon(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A loaded machine starts the ArgoCD watch late: the script must wait for the baselines.

    A sync the daemon first sees already done is its baseline, never a deployment
    (detect.py, first sight). When the demo played step 1 before the daemon had
    listed the apps (its readiness wait passed before the "argocd" condition was
    even declared), prod-east-1's deployment was lost and prod-west-1's sync of
    the same revision went out in its place: the flaky "build-service prod-east-1
    SUCCESS" count of test_demo_table. Here the Kubernetes client takes a second
    to build, as it did under load.
    """
    from doraforwarder.argocd import source
    from doraforwarder.ops.demo import run_demo as demo

    build = source.build_api_client

    def slow_build(config: Any) -> Any:
        time.sleep(1.0)  # a slow start, injected: nothing in the script may depend on it
        return build(config)

    monkeypatch.setattr(source, "build_api_client", slow_build)
    out = io.StringIO()
    assert asyncio.run(demo(out, pace=0.1)) == 0, out.getvalue()
    summary = out.getvalue().split("Summary", 1)[1]
    deployed = summary.split("Not sent, on purpose", 1)[0]
    assert deployed.count("build-service     prod-east-1  SUCCESS") == 3, summary
    assert "prod-west-1" not in deployed, summary
