"""A TOON (Token-Oriented Object Notation) encoder that writes what the reference writes.

TOON writes the JSON data model with indentation instead of braces, so a
language model reads the same facts in fewer tokens: ``key: value`` lines,
nested objects indented by two spaces, arrays of primitives on one line
(``tags[#2]: a,b``), arrays of objects that share their keys and hold only
primitives as a table (``apps[#2]{name,health}:`` then one comma-separated row
each), and any other array as ``- `` list items.

The reference (redhat-appstudio/dora-metrics) serves its inventory through the
Go library toon-format/toon-go with length markers on, so this encoder follows
that library's output byte for byte: ``[#N]`` headers, no newline after the
last line, the same quoting rules (a string is quoted when it is empty, padded
with white space, ``true``/``false``/``null``, number-like or a decimal with a
leading zero, starts with ``-``, or holds a comma, colon, quote, backslash,
bracket, brace, tab or line break), and the same list-item layout. The
maintained Python TOON libraries follow the newer TOON specification, which
dropped the ``#`` marker, so none of them writes those bytes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

_NUMERIC_LIKE = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_NEEDS_QUOTES = re.compile(r'[,:"\\\[\]{}\n\r\t]')
_GO_SPACE = " \t\n\v\f\r\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007" \
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
"""What Go's ``strings.TrimSpace`` trims (``unicode.IsSpace``)."""
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_INDENT = "  "


def encode(value: Any, *, length_markers: bool = True) -> str:
    """``value`` (dicts, lists, str, int, float, bool, None) as a TOON document."""
    return _Encoder(length_markers).document(value)


def _quote(value: str) -> str:
    return '"' + "".join(_ESCAPES.get(char, char) for char in value) + '"'


def _string(value: str) -> str:
    for char in value:
        if char < " " and char not in "\n\r\t":
            raise ValueError(f"TOON cannot encode the control character U+{ord(char):04X}")
    if (
        not value
        or value.strip(_GO_SPACE) != value
        or value in ("true", "false", "null")
        or _NUMERIC_LIKE.fullmatch(value) is not None
        or (len(value) > 1 and value[0] == "0" and value[1].isdigit())
        or value.startswith("-")
        or _NEEDS_QUOTES.search(value) is not None
    ):
        return _quote(value)
    return value


def _key(key: str) -> str:
    unquoted = bool(key) and (key[0] == "_" or key[0].isalpha()) and all(
        char.isalnum() or char in "_." for char in key[1:]
    )
    return key if unquoted else _quote(key)


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
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return _string(value)
    raise TypeError(f"TOON cannot encode a {type(value).__name__}")


def _is_primitive(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _is_array(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _table_fields(items: list[Any]) -> list[str] | None:
    """The first item's keys when every item is an object of primitives with that key set."""
    if not items or not isinstance(items[0], Mapping) or not items[0]:
        return None
    keys = list(items[0])
    if not all(_is_primitive(v) for v in items[0].values()):
        return None
    for item in items[1:]:
        if not isinstance(item, Mapping) or set(item) != set(keys) or len(item) != len(keys):
            return None
        if not all(_is_primitive(v) for v in item.values()):
            return None
    return keys


class _Encoder:
    def __init__(self, length_markers: bool) -> None:
        self.mark = "#" if length_markers else ""
        self.lines: list[str] = []

    def document(self, value: Any) -> str:
        if isinstance(value, Mapping):
            self.fields(value, 0)
        elif _is_array(value):
            self.array("", list(value), 0)
        else:
            self.lines.append(_primitive(value))
        return "\n".join(self.lines)

    def header(self, key: str, length: int, fields: list[str] | None = None) -> str:
        columns = "{" + ",".join(map(_key, fields)) + "}" if fields else ""
        return f"{key}[{self.mark}{length}]{columns}:"

    def rows(self, items: list[Any], fields: list[str], depth: int) -> None:
        indent = _INDENT * depth
        for item in items:
            self.lines.append(indent + ",".join(_primitive(item[f]) for f in fields))

    def fields(self, obj: Mapping[str, Any], depth: int) -> None:
        indent = _INDENT * depth
        for key, value in obj.items():
            if isinstance(value, Mapping):
                self.lines.append(f"{indent}{_key(key)}:")
                self.fields(value, depth + 1)
            elif _is_array(value):
                self.array(_key(key), list(value), depth)
            else:
                self.lines.append(f"{indent}{_key(key)}: {_primitive(value)}")

    def array(self, key: str, items: list[Any], depth: int) -> None:
        indent = _INDENT * depth
        if all(_is_primitive(item) for item in items):
            inline = ",".join(map(_primitive, items))
            self.lines.append(f"{indent}{self.header(key, len(items))}" +
                              (f" {inline}" if items else ""))
            return
        fields = _table_fields(items)
        if fields is not None:
            self.lines.append(indent + self.header(key, len(items), fields))
            self.rows(items, fields, depth + 1)
            return
        self.lines.append(indent + self.header(key, len(items)))
        for item in items:
            self.item(item, depth + 1)

    def item(self, value: Any, depth: int) -> None:
        indent = _INDENT * depth
        if isinstance(value, Mapping):
            self.object_item(value, depth)
        elif _is_array(value):
            self.array_item("", list(value), depth)
        else:
            self.lines.append(f"{indent}- {_primitive(value)}")

    def object_item(self, obj: Mapping[str, Any], depth: int) -> None:
        indent = _INDENT * depth
        if not obj:
            self.lines.append(f"{indent}- {{}}")
            return
        (first_key, first), *rest = obj.items()
        if _is_primitive(first):
            self.lines.append(f"{indent}- {_key(first_key)}: {_primitive(first)}")
        elif _is_array(first):
            self.array_item(_key(first_key), list(first), depth)
        else:
            self.lines.append(f"{indent}-")
            self.fields(obj, depth + 1)
            return
        self.fields(dict(rest), depth + 1)

    def array_item(self, key: str, items: list[Any], depth: int) -> None:
        indent = _INDENT * depth
        fields = _table_fields(items)
        if fields is not None:
            self.lines.append(f"{indent}- {self.header(key, len(items), fields)}")
            self.rows(items, fields, depth + 1)
        elif all(_is_primitive(item) for item in items):
            inline = ",".join(map(_primitive, items))
            self.lines.append(f"{indent}- {self.header(key, len(items))}" +
                              (f" {inline}" if items else ""))
        else:
            self.lines.append(f"{indent}- {self.header(key, len(items))}")
            for item in items:
                self.item(item, depth + 1)
