"""Structured logs: JSON lines in production, readable console on a terminal.

Every line carries the ``component`` that wrote it (``argocd``, ``webrca``,
``devlake``, ``github``, ``outbox``, ``http``, ``daemon``). The last processor
before rendering redacts every configured secret value and every
``Authorization`` header wherever they appear, including in messages of
libraries (urllib3, kubernetes, httpx) routed through the standard library.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from doraforwarder.redaction import SecretRedactor as SecretRedactor
from doraforwarder.redaction import redactor as redactor


def _default_component(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    if "component" not in event_dict:
        record = event_dict.get("_record")
        name = record.name if record is not None else ""
        event_dict["component"] = name.split(".")[0] if name else "daemon"
    return event_dict


LogFormat = Literal["auto", "json", "console"]


def configure_logging(
    level: str = "info",
    log_format: LogFormat = "auto",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Configure structlog and the standard library for the whole process."""
    stream = stream or sys.stdout
    redactor.add(secrets)
    use_console = log_format == "console" or (log_format == "auto" and stream.isatty())
    renderer: Processor = (
        structlog.dev.ConsoleRenderer(colors=stream.isatty())
        if use_console
        else structlog.processors.JSONRenderer()
    )
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _default_component,
        structlog.processors.format_exc_info,
    ]
    numeric = logging.getLevelNamesMapping()[{"warn": "warning"}.get(level, level).upper()]
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            redactor,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # Chatty libraries: their debug lines can carry request headers.
    for noisy in ("urllib3", "kubernetes", "httpx", "httpcore", "aiohttp.access", "asyncio"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))


def get_logger(component: str, **context: Any) -> structlog.stdlib.BoundLogger:
    """A logger whose every line names ``component``."""
    # Initial values stay lazy: binding here would freeze the logger with the
    # configuration of import time, before configure_logging() ran.
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(
        component, component=component, **context
    )
    return logger
