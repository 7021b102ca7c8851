"""A small TOON (Token-Oriented Object Notation) encoder for JSON-like values.

TOON writes the JSON data model with indentation instead of braces, so a
language model reads the same facts in fewer tokens: ``key: value`` lines,
nested objects indented by two spaces, arrays of primitives on one line
(``tags[2]: a,b``), arrays of objects that share their keys and hold only
primitives as a table (``apps[2]{name,health}:`` then one comma-separated row
each), and any other array as ``- `` list items. Strings are quoted only when
they would read as something else (empty, padded, ``true``/``false``/``null``,
number-like, or holding a comma, colon, quote, backslash, bracket, brace or
control character, or starting with ``-`` or ``#``).

Written by hand for the shapes the daemon serves, rather than adding a
dependency: every value here comes from ``json``-compatible Python objects.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

_UNQUOTED_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_NUMERIC_LIKE = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_STRUCTURAL = re.compile(r'[,:"\\\[\]{}\x00-\x1f]')
_INDENT = "  "


def encode(value: Any) -> str:
    """``value`` (dicts, lists, str, int, float, bool, None) as a TOON document."""
    lines: list[str] = []
    if isinstance(value, Mapping):
        _fields(value, 0, lines)
    elif isinstance(value, Sequence) and not isinstance(value, str):
        _array("", list(value), 0, lines)
    else:
        lines.append(_primitive(value))
    return "\n".join(lines) + "\n"


def _string(value: str) -> str:
    if (
        not value
        or value[0] in " \t-#"
        or value[-1] in " \t"
        or value in ("true", "false", "null")
        or _STRUCTURAL.search(value) is not None
        or _NUMERIC_LIKE.fullmatch(value) is not None
    ):
        return json.dumps(value, ensure_ascii=False)
    return value


def _key(key: str) -> str:
    return key if _UNQUOTED_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def _primitive(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return "null"
        return repr(value).removesuffix(".0") if value.is_integer() else repr(value)
    if isinstance(value, str):
        return _string(value)
    raise TypeError(f"TOON cannot encode a {type(value).__name__}")


def _is_primitive(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _table_fields(items: list[Any]) -> list[str] | None:
    """The shared keys when every item is an object of primitives with the same keys."""
    if not items or not all(isinstance(item, Mapping) and item for item in items):
        return None
    keys = list(items[0])
    for item in items:
        if list(item) != keys or not all(_is_primitive(v) for v in item.values()):
            return None
    return keys


def _fields(obj: Mapping[str, Any], depth: int, lines: list[str]) -> None:
    for key, value in obj.items():
        _field(_key(key), value, depth, lines)


def _field(key: str, value: Any, depth: int, lines: list[str]) -> None:
    indent = _INDENT * depth
    if isinstance(value, Mapping):
        lines.append(f"{indent}{key}:")
        _fields(value, depth + 1, lines)
    elif isinstance(value, Sequence) and not isinstance(value, str):
        _array(key, list(value), depth, lines)
    else:
        lines.append(f"{indent}{key}: {_primitive(value)}")


def _array(key: str, items: list[Any], depth: int, lines: list[str]) -> None:
    indent = _INDENT * depth
    head = f"{indent}{key}[{len(items)}]"
    if all(_is_primitive(item) for item in items):
        lines.append(f"{head}: {','.join(map(_primitive, items))}" if items else f"{head}:")
        return
    fields = _table_fields(items)
    if fields is not None:
        lines.append(f"{head}{{{','.join(map(_key, fields))}}}:")
        row_indent = _INDENT * (depth + 1)
        for item in items:
            lines.append(row_indent + ",".join(_primitive(item[f]) for f in fields))
        return
    lines.append(f"{head}:")
    for item in items:
        _item(item, depth + 1, lines)


def _item(value: Any, depth: int, lines: list[str]) -> None:
    indent = _INDENT * depth
    if isinstance(value, Mapping) and value:
        first = len(lines)
        _fields(value, depth + 1, lines)
        lines[first] = indent + "- " + lines[first][len(indent + _INDENT):]
    elif isinstance(value, Mapping):
        lines.append(f"{indent}-")
    elif isinstance(value, Sequence) and not isinstance(value, str):
        items = list(value)
        if all(_is_primitive(item) for item in items):
            lines.append(f"{indent}- [{len(items)}]: {','.join(map(_primitive, items))}")
        else:
            lines.append(f"{indent}- [{len(items)}]:")
            for item in items:
                _item(item, depth + 1, lines)
    else:
        lines.append(f"{indent}- {_primitive(value)}")
