"""``doraforwarder doctor``: config, Kubernetes, Redis, DevLake, GitHub, WebRCA, registries."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time

from doraforwarder.commands.common import print_json, warn_file_secrets
from doraforwarder.config import load_config
from doraforwarder.ops.doctor import render, run_checks


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
