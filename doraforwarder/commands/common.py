"""Options and set-up shared by the commands that read the configuration.

``--config``, ``--log-level`` and ``--log-format`` are global: accepted before
the command (``doraforwarder --config F doctor``) as well as after it
(``doraforwarder doctor --config F``); after the command wins.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from doraforwarder.config import LoadedConfig, file_secret_warnings, load_config
from doraforwarder.logging import configure_logging, get_logger

GLOBAL_DEFAULTS: dict[str, Any] = {"config": None, "log_level": None, "log_format": None}


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (exit 2), never the usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def global_options() -> argparse.ArgumentParser:
    """The options every command accepts, before or after its name (defaults suppressed,
    so a value given before the command is not reset by the sub-command's parser)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--config", "-c", metavar="FILE", default=argparse.SUPPRESS,
        help="configuration file (default: $DORAFORWARDER_CONFIG, else configs/config.yaml "
             "in the working directory as the reference, else config/config.yaml)",
    )
    parent.add_argument(
        "--log-format", choices=["auto", "json", "console"], default=argparse.SUPPRESS,
        help="log rendering (default: server.log_format; auto = console on a terminal)",
    )
    parent.add_argument("--log-level", default=argparse.SUPPRESS,
                        choices=["debug", "info", "warning", "warn", "error"],
                        help="override server.log_level")
    return parent


GLOBAL = global_options()


def fill_global_defaults(args: argparse.Namespace) -> None:
    for name, value in GLOBAL_DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, value)


def add_command(subparsers: Any, name: str, handler: Callable[[argparse.Namespace], int], *,
                help: str, description: str, output: bool = False) -> argparse.ArgumentParser:
    """One sub-command: its help, the global options, ``-o`` when it has JSON, its handler."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help, description=description, parents=[GLOBAL])
    if output:
        add_output_argument(parser)
    parser.set_defaults(handler=handler)
    return parser


def add_output_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", choices=["text", "json"], default="text",
                        help="text for people (default) or json for scripts")


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False, default=str))


def warn_file_secrets(config: LoadedConfig) -> None:
    """The same warnings ``run`` logs, for commands that print instead of logging."""
    for note in file_secret_warnings(config):
        print(f"doraforwarder: warning: {note}", file=sys.stderr)


def load_and_configure(args: argparse.Namespace) -> LoadedConfig:
    """Load the configuration and set up logging with its secrets redacted.

    With ``--dry-run`` stdout carries the payloads, one JSON line each, so
    the logs go to stderr and the two never mix; so do they for a command whose
    stdout is its report (``logs_to_stderr``: backfill's table).
    """
    config = load_config(args.config)
    server = config.settings.server
    configure_logging(
        level=getattr(args, "log_level", None) or server.log_level,
        log_format=getattr(args, "log_format", None) or server.log_format,
        secrets=config.secrets.values(),
        stream=sys.stderr if getattr(args, "dry_run", False)
        or getattr(args, "logs_to_stderr", False) else sys.stdout,
    )
    for note in config.deprecations:
        get_logger("config").warning(f"deprecated configuration key: {note}",
                                     config=config.source)
    for note in file_secret_warnings(config):
        get_logger("config").warning(note, config=config.source)
    if getattr(args, "dotenv", None):
        get_logger("config").info("environment variables read from .env in the working "
                                  "directory (those already set win)", variables=args.dotenv)
    return config
