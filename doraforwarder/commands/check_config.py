"""``doraforwarder check-config``: validate and print the effective configuration."""

from __future__ import annotations

import argparse

import yaml

from doraforwarder.commands.common import warn_file_secrets
from doraforwarder.config import LoadedConfig, load_config


def behaviour_notes(config: LoadedConfig) -> list[str]:
    """Defaults a reader of the file cannot see, one sentence each."""
    notes = []
    webrca = config.settings.webrca
    if webrca.products_defaulted:
        notes.append("webrca.products is not set: only incidents of product konflux are "
                     "forwarded, with component konflux, as the reference does "
                     "(set webrca.products: [] to forward every product's incidents)")
    elif not webrca.products:
        notes.append("webrca.products is []: every product's incidents are forwarded")
    return notes


def handle(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    warn_file_secrets(config)
    print(f"# configuration from {config.source} is valid; effective values:")
    for note in config.deprecations:
        print(f"# deprecated: {note}")
    for note in behaviour_notes(config):
        print(f"# note: {note}")
    print(yaml.safe_dump(config.redacted(), sort_keys=False), end="")
    return 0
