"""``doraforwarder demo``: the whole pipeline against built-in fakes, no cluster needed."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from doraforwarder.commands.common import add_command
from doraforwarder.logging import configure_logging


def add_parser(subparsers: Any) -> None:
    parser = add_command(
        subparsers, "demo", handle,
        help="run the real pipeline against built-in fakes (no cluster, no network)",
        description="Fake Kubernetes, GitHub, WebRCA and DevLake on loopback; Applications "
        "sync on a script for about 20 seconds; what DevLake accepts is printed.",
    )
    parser.add_argument("--json", action="store_true",
                        help="print each accepted payload as a JSON line, then one DORA line per "
                        "project, instead of the tables")
    parser.add_argument("--pace", type=float, default=1.0, help=argparse.SUPPRESS)


def handle(args: argparse.Namespace) -> int:
    from doraforwarder.ops.demo import run_demo

    # The daemon's logs would drown the table: errors only unless --log-level says otherwise.
    configure_logging(level=args.log_level or "error", log_format="console", stream=sys.stderr)
    return asyncio.run(run_demo(sys.stdout, as_json=args.json, pace=args.pace))
