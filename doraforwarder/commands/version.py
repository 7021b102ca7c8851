"""``doraforwarder version``."""

from __future__ import annotations

import argparse
from typing import Any

from doraforwarder import __version__
from doraforwarder.commands.common import GLOBAL


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("version", help="print the version",
                                                            parents=[GLOBAL])
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    print(f"doraforwarder {__version__}")
    return 0
