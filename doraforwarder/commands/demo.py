"""``doraforwarder demo``: the whole pipeline against built-in fakes, no cluster needed."""

from __future__ import annotations

import argparse
import asyncio
import sys

from doraforwarder.logging import configure_logging


def handle(args: argparse.Namespace) -> int:
    from doraforwarder.ops.demo import run_demo

    # The daemon's logs would drown the table: errors only unless --log-level says otherwise.
    configure_logging(level=args.log_level or "error", log_format="console", stream=sys.stderr)
    return asyncio.run(run_demo(sys.stdout, as_json=args.json, pace=args.pace))
