"""``doraforwarder check-config``: validate and print the effective configuration."""

from __future__ import annotations

import argparse
from typing import Any

import yaml

from doraforwarder.commands.common import add_command, warn_file_secrets
from doraforwarder.config import load_config

DESCRIPTION = "Exit 0 and print the effective configuration, or exit 2 naming the problem."


def add_parser(subparsers: Any) -> None:
    add_command(subparsers, "check-config", handle, description=DESCRIPTION,
                help="validate the configuration and print it (secrets as ***)")


def handle(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    warn_file_secrets(config)
    print(f"# configuration from {config.source} is valid; effective values:")
    for note in config.deprecations:
        print(f"# deprecated: {note}")
    print(yaml.safe_dump(config.redacted(), sort_keys=False), end="")
    return 0
