"""Start-up cost of the command line: whole processes, wall and CPU, before and after.

    .venv/bin/python bench/cli_startup.py                      # this checkout alone
    .venv/bin/python bench/cli_startup.py --before DIR         # and an older tree, interleaved
    .venv/bin/python bench/cli_startup.py --before DIR --pytest 2

Each run is the real ``doraforwarder`` console script (``python -m doraforwarder``
when the venv has none) as a fresh process: its wall time, and its user + system
CPU from ``getrusage(RUSAGE_CHILDREN)`` around it. ``--before DIR`` names a tree
of older code (``git archive COMMIT | tar -x -C DIR``), put first on
``PYTHONPATH`` for its runs; the two alternate run by run, so a change in the
machine's load falls on both. ``--pytest N`` also times N interleaved runs of
the CLI test files, each tree running its own copies. The load average is
printed before and after: the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
CONFIG = 'server: {port: "0"}\nstorage: {redis: {address: "127.0.0.1:1"}}\n'
CASES = {"check-config": ["check-config", "--config", "small.yaml"], "--help": ["--help"]}
TEST_FILES = ["tests/test_cli_errors.py", "tests/test_cli_switch.py", "tests/test_cli_status.py"]


def command() -> list[str]:
    script = Path(sys.executable).with_name("doraforwarder")
    return [str(script)] if script.exists() else [sys.executable, "-m", "doraforwarder"]


def timed(argv: list[str], cwd: Path, tree: Path | None) -> tuple[float, float]:
    """Wall and CPU seconds of one process (and what it waited for)."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def summary(samples: list[tuple[float, float]]) -> str:
    walls, cpus = [s[0] for s in samples], [s[1] for s in samples]
    return (f"wall {statistics.median(walls):.3f} s ({min(walls):.3f}-{max(walls):.3f}), "
            f"CPU {statistics.median(cpus):.3f} s ({min(cpus):.3f}-{max(cpus):.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--before", type=Path, help="a tree of older code to compare with")
    parser.add_argument("--pytest", type=int, default=0, metavar="N",
                        help="also time N runs of " + " ".join(TEST_FILES))
    args = parser.parse_args()
    trees: dict[str, Path | None] = {"after": None}
    if args.before:
        trees = {"before": args.before.resolve(), "after": None}
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as directory:
        cwd = Path(directory)
        (cwd / "small.yaml").write_text(CONFIG)
        for _ in range(args.runs):
            for case, argv in CASES.items():
                for name, tree in trees.items():
                    samples.setdefault((case, name), []).append(
                        timed([*command(), *argv], cwd, tree))
    for _ in range(args.pytest):
        for name, tree in trees.items():
            root = tree or HERE
            samples.setdefault(("pytest", name), []).append(timed(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TEST_FILES],
                root, tree))
    print(f"load average at end:   {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for (case, name), runs in samples.items():
        print(f"{case:<13} {name:<7} {len(runs):>2} runs: {summary(runs)}")


if __name__ == "__main__":
    main()
