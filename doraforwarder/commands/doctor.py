"""``doraforwarder doctor``: config, Kubernetes, Redis, DevLake, GitHub, WebRCA, registries."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time
from typing import Any

from doraforwarder.commands.common import (
    add_command,
    print_json,
    warn_file_secrets,
)
from doraforwarder.config import load_config
from doraforwarder.ops.doctor import render, run_checks


def add_parser(subparsers: Any) -> None:
    add_command(subparsers, "doctor", handle, output=True,
                help="check every dependency the configuration names",
                description="One pass/fail line per check, with a hint. Exit 0 only "
                "if every required check passes.")


def handle(args: argparse.Namespace) -> int:
    started = time.monotonic()
    config = load_config(args.config)
    warn_file_secrets(config)
    checks = asyncio.run(run_checks(config))
    if args.output == "json":
        print_json({"ok": not any(check.failed for check in checks),
                    "checks": [dataclasses.asdict(check) for check in checks]})
    else:
        print(render(checks, started))
    return 1 if any(check.failed for check in checks) else 0
