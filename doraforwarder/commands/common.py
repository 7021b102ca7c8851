"""Options and set-up shared by the commands that read the configuration."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from doraforwarder.config import LoadedConfig, load_config
from doraforwarder.logging import configure_logging, get_logger


def add_command(subparsers: Any, name: str, handler: Callable[[argparse.Namespace], int], *,
                help: str, description: str, config: bool = True,
                logging: bool = False) -> argparse.ArgumentParser:
    """One sub-command: its help, ``--config`` (and the logging options) and its handler."""
    parser: argparse.ArgumentParser = subparsers.add_parser(name, help=help,
                                                            description=description)
    if config:
        add_config_argument(parser)
    if logging:
        add_logging_arguments(parser)
    parser.set_defaults(handler=handler)
    return parser


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        default=None,
        help="configuration file (default: $DORAFORWARDER_CONFIG, else config/config.yaml)",
    )


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default=None,
        help="log rendering (default: server.log_format; auto = console on a terminal)",
    )
    parser.add_argument("--log-level", default=None, help="override server.log_level")


def load_and_configure(args: argparse.Namespace) -> LoadedConfig:
    """Load the configuration and set up logging with its secrets redacted.

    With ``--dry-run`` stdout carries the payloads, one JSON line each, so
    the logs go to stderr and the two never mix.
    """
    config = load_config(args.config)
    server = config.settings.server
    configure_logging(
        level=getattr(args, "log_level", None) or server.log_level,
        log_format=getattr(args, "log_format", None) or server.log_format,
        secrets=config.secrets.values(),
        stream=sys.stderr if getattr(args, "dry_run", False) else sys.stdout,
    )
    for note in config.deprecations:
        get_logger("config").warning(f"deprecated configuration key: {note}",
                                     config=config.source)
    if config.settings.webrca.token:
        get_logger("config").warning(
            "webrca.token in the configuration file is ignored: secrets come only from the "
            "environment; set OFFLINE_TOKEN (or OFFLINE_TOKEN_FILE)",
            config=config.source,
        )
    return config
