"""Command line: ``doraforwarder run | check-config | status | doctor | backfill | outbox | ...``.

Each command's arguments are in :mod:`doraforwarder.commands.parsers`, which
names the module that runs it (``doraforwarder/commands/<name>.py``); this
module assembles the parsers, imports the one command's module that the
arguments name, and maps every operator mistake to one line on stderr, never a
traceback: configuration problems (and a bad command line) exit 2, anything
else that stops a command exits 1. It imports nothing heavy itself, so
``--help`` and ``version`` do not pay for the daemon (tests/test_cli_startup.py).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib import import_module

from doraforwarder import __version__
from doraforwarder.commands.parsers import COMMANDS, GLOBAL, Parser, fill_global_defaults
from doraforwarder.env_file import load_dotenv_file
from doraforwarder.errors import ConfigError, KubeAccessError
from doraforwarder.redaction import redactor

EXIT_CONFIG = 2


def build_parser() -> Parser:
    parser = Parser(
        prog="doraforwarder",
        description="Forward ArgoCD deployments and WebRCA incidents to Apache DevLake.",
        parents=[GLOBAL],
    )
    parser.add_argument("--version", action="version", version=f"doraforwarder {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for add_parser in COMMANDS:
        add_parser(subparsers)
    return parser


def _one_line(text: str) -> str:
    return redactor.redact_text(" ".join(text.split()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    fill_global_defaults(args)
    try:
        args.dotenv = load_dotenv_file()
        code: int = import_module(args.module).handle(args)
    except (ConfigError, KubeAccessError) as exc:
        print(f"doraforwarder: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the last guard: one line, never a traceback
        if args.log_level == "debug":
            raise
        print(f"doraforwarder {args.command}: {_one_line(f'{type(exc).__name__}: {exc}')} "
              "(--log-level debug shows the traceback)", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
