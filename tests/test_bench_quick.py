"""The benchmarks' quick mode runs, so the bench never rots (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_bench_runs_and_reports_every_case(tmp_path: Path) -> None:
    output = tmp_path / "quick.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--output", str(output)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ratio" in done.stdout
    results = json.loads(output.read_text())
    cases = results["scale"]["cases"]
    assert {(case["size"], case["apps"]) for case in cases} == {
        (size, apps) for size in ("3KB", "30KB") for apps in (100, 300)}
    assert all(case["watcher_events_per_s"] > 0 and case["ratio"] > 0 for case in cases)
    assert results["refresh"]["events"] == 500
    process = results["process"]
    assert process["events"] == 500 and len(process["daemon_cpu_us_per_event"]) == 1


def test_sized_templates_are_valid_applications_of_their_size() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from apps import MIX, Templates

        from doraforwarder.argocd.decode import AppDocument, decode_object, to_view
        from doraforwarder.argocd.parse import parse_application
    finally:
        sys.path.remove(str(ROOT / "bench"))
    small, large = Templates("3KB"), Templates("30KB")
    assert 3000 <= len(small.app(1)) < 5000 and 25_000 <= len(large.app(1)) <= 32_000
    for size in MIX:
        raw = Templates(size).app(42)
        obj = json.loads(raw)
        assert 10 <= len(obj["status"]["resources"]) <= 40
        document = decode_object(raw)
        assert isinstance(document, AppDocument)
        assert to_view(document) == parse_application(obj)
