"""``doraforwarder version``."""

from __future__ import annotations

import argparse

from doraforwarder import __version__


def handle(args: argparse.Namespace) -> int:
    print(f"doraforwarder {__version__}")
    return 0
