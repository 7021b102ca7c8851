"""Structured logs: JSON lines in production, readable console on a terminal.

Every line carries the ``component`` that wrote it (``argocd``, ``webrca``,
``devlake``, ``github``, ``outbox``, ``http``, ``daemon``). The last processor
before rendering redacts every configured secret value and every
``Authorization`` header wherever they appear, including in messages of
libraries (urllib3, kubernetes, httpx) routed through the standard library.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

MASK = "***"
_SENSITIVE_KEYS = frozenset(
    {"authorization", "token", "access_token", "refresh_token", "password", "secret", "api_key"}
)
_BEARER = re.compile(r"(\bbearer\s+)[^\s\"',}]+", re.IGNORECASE)
_AUTHORIZATION = re.compile(r"(\bauthorization[\"']?\s*[:=]\s*[\"']?)(?!bearer\s)[^\s\"',}]+",
                            re.IGNORECASE)


class SecretRedactor:
    """Replace secret values anywhere in an event dict with ``***``.

    Values are registered once at start (``GITHUB_TOKEN`` and friends); the
    processor walks nested dicts, lists and strings. Keys that by name hold a
    secret (``Authorization``, ``token``, ``password``) are masked whatever
    their value.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        for secret in secrets:
            if secret and len(secret) >= 4 and secret not in self._secrets:
                self._secrets.append(secret)
        # Longest first, so a secret containing another is masked whole.
        self._secrets.sort(key=len, reverse=True)

    def redact_text(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        text = _BEARER.sub(rf"\g<1>{MASK}", text)
        return _AUTHORIZATION.sub(rf"\g<1>{MASK}", text)

    def redact(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, MutableMapping):
            return {
                key: MASK
                if isinstance(key, str) and key.lower() in _SENSITIVE_KEYS and value[key]
                else self.redact(value[key])
                for key in value
            }
        if isinstance(value, list | tuple | set):
            return [self.redact(item) for item in value]
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self.redact_text(str(value))

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        return {key: self.redact(value) for key, value in event_dict.items()}


redactor = SecretRedactor()
"""The process-wide redactor; :func:`configure_logging` registers the secrets."""


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
