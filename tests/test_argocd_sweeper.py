"""The ArgoCD sweeper outlives a failing round (issue 19, finding 9).

It re-decides pending syncs at their deadline and keeps ``/readyz`` honest;
an exception once ended its task silently, for the life of the process.
"""

from __future__ import annotations

from typing import Any

from structlog.testing import capture_logs

from tests.test_argocd_watch import Harness, eventually, harness, kube  # noqa: F401 - fixtures


async def test_the_sweeper_survives_a_failing_round(harness: Harness) -> None:  # noqa: F811
    running = await harness.start()
    source = running.source
    real = source.recheck_due
    calls = 0

    async def failing_once() -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")
        return await real()

    source.recheck_due = failing_once  # type: ignore[method-assign]
    with capture_logs() as logs:
        await eventually(lambda: calls >= 3, timeout=5, what="sweeper rounds after a failure")
    assert any(e["event"].startswith("argocd sweeper round failed") for e in logs)
