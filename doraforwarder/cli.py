"""Command line: ``doraforwarder run | check-config | version | outbox | demo | doctor | backfill``.

Each command lives in ``doraforwarder/commands/<name>.py`` and exposes
``add_parser(subparsers)``; this module only assembles them and maps the two
kinds of expected failure to exit codes: configuration problems exit 2 with
one clear line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from doraforwarder import __version__
from doraforwarder.commands import COMMANDS
from doraforwarder.config import ConfigError

EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="doraforwarder",
        description="Forward ArgoCD deployments and WebRCA incidents to Apache DevLake.",
    )
    parser.add_argument("--version", action="version", version=f"doraforwarder {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        print(f"doraforwarder: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
