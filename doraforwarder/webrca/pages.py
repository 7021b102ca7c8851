"""Reading WebRCA incident pages and deciding when pagination ends: pure functions.

A page shorter than the requested size is the last. A server that keeps
answering full pages must not keep the poller busy forever, so the page
count is also capped by ``total`` (when the server gives one) and by a
hard limit.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

HARD_PAGE_LIMIT = 1000
"""100,000 incidents at the default page size: far beyond any real WebRCA."""


@dataclass(frozen=True)
class PageRead:
    """What one answer of the incidents endpoint holds."""

    number: int
    items: list[Any] = field(default_factory=list)
    """Raw items, checked one by one later: one bad item must not hide the others."""
    total: int | None = None
    problem: str | None = None
    """Why the page as a whole is unusable (``invalid_json``, ``too_deep``, ``missing_items``,
    ``too_large``), else None."""
    detail: str = ""


def read_page(text: str, number: int) -> PageRead:
    """Parse the body of page ``number``; a broken page is reported, never raised."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        return PageRead(number, problem="invalid_json", detail=f"not JSON: {exc}")
    except RecursionError:  # a hostile or broken peer; json.loads has no depth limit of its own
        return PageRead(number, problem="too_deep",
                        detail="JSON nested deeper than Python's recursion limit")
    if not isinstance(document, dict):
        return PageRead(number, problem="invalid_json",
                        detail=f"top level is a {type(document).__name__}, not an object")
    total = document.get("total")
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        total = None
    items = document.get("items")
    if not isinstance(items, list):
        return PageRead(number, total=total, problem="missing_items",
                        detail="no list under 'items'")
    return PageRead(number, items=items, total=total)


def page_limit(total: int | None, size: int, hard_limit: int = HARD_PAGE_LIMIT) -> int:
    """How many pages to read at most, given the last ``total`` the server announced."""
    if total is None:
        return hard_limit
    return max(1, min(hard_limit, math.ceil(total / size)))


def is_last_page(page: PageRead, size: int, limit: int, total: int | None) -> bool:
    """Whether to stop after ``page``: a short page, or the page limit reached.

    ``total`` is the last one the server announced (on this page or before).
    A page that could not be read says nothing about what follows: go on
    only when a known ``total`` says there is more.
    """
    if page.number >= limit:
        return True
    if page.problem is not None:
        return total is None
    return len(page.items) < size
