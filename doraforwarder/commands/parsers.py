"""Every command's arguments, built without importing what runs the command.

A command's handler is named, not imported: ``module`` in its defaults is the
module whose ``handle(args)`` runs it (``doraforwarder.commands.run``), imported
by :func:`doraforwarder.cli.main` once the arguments parsed. So ``--help``,
``version`` and a mistyped option cost argparse alone, and ``check-config``
loads the configuration models but not the daemon, the Kubernetes client or
aiohttp (tests/test_cli_startup.py keeps it so). This module imports nothing of
the project: what a type check needs at parse time (``_date``, ``entry_id``) is
here.

``--config``, ``--log-level`` and ``--log-format`` are global: accepted before
the command (``doraforwarder --config F doctor``) as well as after it
(``doraforwarder doctor --config F``); after the command wins.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NoReturn

GLOBAL_DEFAULTS: dict[str, Any] = {"config": None, "log_level": None, "log_format": None}

_COMMANDS = "doraforwarder.commands"


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


def add_command(subparsers: Any, name: str, module: str, *, help: str, description: str,
                output: bool = False) -> argparse.ArgumentParser:
    """One sub-command: its help, the global options, ``-o`` when it has JSON, and the
    module (under ``doraforwarder.commands``) whose ``handle`` runs it."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help, description=description, parents=[GLOBAL])
    if output:
        add_output_argument(parser)
    parser.set_defaults(module=f"{_COMMANDS}.{module}")
    return parser


def add_output_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", choices=["text", "json"], default="text",
                        help="text for people (default) or json for scripts")


def run(subparsers: Any) -> None:
    parser = add_command(subparsers, "run", "run", help="run the daemon",
                         description="Watch, resolve, deliver until stopped.")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print each DevLake payload as a JSON line on stdout instead of sending it",
    )


def demo(subparsers: Any) -> None:
    parser = add_command(
        subparsers, "demo", "demo",
        help="run the real pipeline against built-in fakes (no cluster, no network)",
        description="Fake Kubernetes, GitHub, WebRCA and DevLake on loopback; Applications "
        "sync on a script for about 20 seconds; what DevLake accepts is printed.",
    )
    parser.add_argument("--json", action="store_true",
                        help="print each accepted payload as a JSON line, then one DORA line per "
                        "project, instead of the tables")
    parser.add_argument("--pace", type=float, default=1.0, help=argparse.SUPPRESS)


def check_config(subparsers: Any) -> None:
    add_command(subparsers, "check-config", "check_config",
                description="Exit 0 and print the effective configuration, or exit 2 naming "
                "the problem.",
                help="validate the configuration and print it (secrets as ***)")


def doctor(subparsers: Any) -> None:
    add_command(subparsers, "doctor", "doctor", output=True,
                help="check every dependency the configuration names",
                description="One pass/fail line per check, with a hint. Exit 0 only "
                "if every required check passes.")


def status(subparsers: Any) -> None:
    add_command(subparsers, "status", "status", output=True,
                help="what /api/v1/status shows, read from Redis (no daemon needed)",
                description="Outbox depth and age, dead letters, last WebRCA poll, "
                "applications with stored state, open Alertmanager incidents.")


def _date(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date: use YYYY-MM-DD or an ISO 8601 time"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def backfill(subparsers: Any) -> None:
    parser = add_command(
        subparsers, "backfill", "backfill",
        help="send the syncs ArgoCD still remembers (status.history) as deployments",
        description="Deployments get the ids the live path uses, so running backfill twice "
        "or next to the daemon creates no duplicates in DevLake.",
    )
    parser.set_defaults(logs_to_stderr=True)  # stdout is the report
    parser.add_argument("--since", required=True, type=_date, metavar="DATE",
                        help="only syncs deployed at or after DATE (e.g. 2025-01-01)")
    parser.add_argument("--namespace", help="only Applications in this namespace")
    parser.add_argument("--component", help="only this component")
    parser.add_argument("--dry-run", action="store_true",
                        help="print each payload as a JSON line instead of sending it")
    parser.add_argument("--wait", type=float, default=600.0, metavar="SECONDS",
                        help="how long to wait for delivery before leaving the rest to the "
                        "daemon (default 600)")


_ENTRY_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")


def entry_id(value: str) -> str:
    """An entry id as ``outbox list``/``dead`` print it (``1733600000000-0``), else one line
    saying so (Redis would answer "Invalid stream ID", and ``-``/``+`` mean "any entry")."""
    text = value.strip()
    if not _ENTRY_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an entry id: ids look like 1733600000000-0, as "
            "'doraforwarder outbox list' and 'outbox dead' print them")
    return text


def outbox(subparsers: Any) -> None:
    parser = add_command(
        subparsers, "outbox", "outbox", output=True,
        help="inspect and repair DevLake delivery (outbox and dead letters)",
        description="Show what waits for DevLake, what it refused, and put entries back.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    def action(name: str, help: str) -> argparse.ArgumentParser:
        # ``outbox list --config FILE`` works as well as ``outbox --config FILE list``.
        sub: argparse.ArgumentParser = actions.add_parser(name, help=help, parents=[GLOBAL])
        sub.add_argument("-o", "--output", choices=["text", "json"], default=argparse.SUPPRESS,
                         help="text (default) or json")
        return sub

    action("stats", "counts: waiting, in delivery, dead letters")
    listing = action("list", "entries waiting for delivery, oldest first")
    listing.add_argument("--limit", type=int, default=50, help="rows to show (default 50)")
    dead = action("dead", "dead letters with the reason DevLake refused them")
    dead.add_argument("--limit", type=int, default=50, help="rows to show (default 50)")
    requeue = action("requeue", "move dead letters back to the outbox")
    which = requeue.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", type=entry_id, help="dead-letter id (see 'outbox dead')")
    which.add_argument("--all", action="store_true", help="requeue every dead letter")
    drop = action("drop", "delete an outbox entry or a dead letter for good")
    drop.add_argument("id", type=entry_id, help="entry id (see 'outbox list' or 'outbox dead')")


def version(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("version", help="print the version",
                                                            parents=[GLOBAL])
    parser.set_defaults(module=f"{_COMMANDS}.version")


COMMANDS: list[Callable[[Any], None]] = [
    run, demo, check_config, doctor, status, backfill, outbox, version]
"""Each command's parser, in the order ``--help`` lists them."""
