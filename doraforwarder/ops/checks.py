"""One doctor check's result: the shape every probe returns.

It lives on its own so that the probes (Kubernetes, and any later one) and
the doctor that runs them both stand on it, without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Outcome = Literal["pass", "fail", "warn", "skip"]


@dataclass(frozen=True)
class Check:
    name: str
    outcome: Outcome
    detail: str
    hint: str = ""

    @property
    def failed(self) -> bool:
        return self.outcome == "fail"


def error_text(exc: BaseException) -> str:
    """``TypeName: message`` (or the bare type name when the message is empty)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
