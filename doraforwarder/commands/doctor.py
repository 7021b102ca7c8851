"""``doraforwarder doctor``: check configuration, Kubernetes, Redis, DevLake, GitHub, WebRCA."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from doraforwarder.commands.common import add_command
from doraforwarder.config import load_config
from doraforwarder.ops.doctor import render, run_checks


def add_parser(subparsers: Any) -> None:
    add_command(subparsers, "doctor", handle,
                help="check every dependency the configuration names",
                description="One pass/fail line per check, with a hint. Exit 0 only if "
                "every required check passes.")


def handle(args: argparse.Namespace) -> int:
    started = time.monotonic()
    config = load_config(args.config)
    checks = asyncio.run(run_checks(config))
    print(render(checks, started))
    return 1 if any(check.failed for check in checks) else 0
