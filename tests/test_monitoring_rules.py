"""The alerting rules under promtool: syntax (``promtool check rules``) and behaviour
(``promtool test rules``, tests/fixtures/promtool/alerts.test.yaml).

promtool reads plain rule files, so the PrometheusRule's ``spec`` is written out as one. Each alert
has unit tests: silent before its ``for``, firing after it with the labels and text an on-call
reads, once for several replicas. ``.ci/run`` installs promtool (Debian's ``prometheus``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RULE = ROOT / "manifests" / "monitoring" / "prometheusrule.yaml"
UNIT_TESTS = ROOT / "tests" / "fixtures" / "promtool" / "alerts.test.yaml"
PROMTOOL = shutil.which("promtool")

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed: apt-get install prometheus (.ci/run does)")


def _alert_names() -> set[str]:
    spec = yaml.safe_load(RULE.read_text())["spec"]
    return {rule["alert"] for group in spec["groups"] for rule in group["rules"] if "alert" in rule}


@pytest.fixture
def rule_dir(tmp_path: Path) -> Path:
    spec = yaml.safe_load(RULE.read_text())["spec"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    return tmp_path


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@needs_promtool
def test_promtool_check_rules(rule_dir: Path) -> None:
    result = _promtool("check", "rules", "rules.yaml", cwd=rule_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alert_names())} rules found" in result.stdout


@needs_promtool
def test_promtool_unit_tests_of_every_alert(rule_dir: Path) -> None:
    result = _promtool("test", "rules", UNIT_TESTS.name, cwd=rule_dir)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test() -> None:
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])
              if case.get("exp_alerts")}
    assert tested == _alert_names(), "each alert needs a promtool test that sees it fire"
