"""CLI commands, one module each; :data:`COMMANDS` is the order ``--help`` shows."""

from types import ModuleType

from doraforwarder.commands import check_config, outbox, run, version

COMMANDS: list[ModuleType] = [run, check_config, outbox, version]
