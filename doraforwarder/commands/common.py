"""Set-up and output shared by the commands' handlers (their arguments are in
:mod:`doraforwarder.commands.parsers`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from doraforwarder.config import LoadedConfig, file_secret_warnings, load_config
from doraforwarder.logging import configure_logging, get_logger


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
