"""CLI commands, one module each; :data:`COMMANDS` is the order ``--help`` shows."""

from types import ModuleType

from doraforwarder.commands import (
    backfill,
    check_config,
    demo,
    doctor,
    outbox,
    run,
    status,
    version,
)

COMMANDS: list[ModuleType] = [run, demo, check_config, doctor, status, backfill, outbox, version]
