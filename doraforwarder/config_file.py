"""Reading the configuration file: text, YAML, one mapping of sections, no key twice.

PyYAML keeps the last of two equal keys without a word, so a second ``server:``
section silently replaces the first; an empty file silently means "every
default"; a binary file raises ``UnicodeDecodeError``. Each is a one-line
configuration error here (exit code 2), naming the file and, where there is
one, the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode


class DuplicateKey(yaml.YAMLError):
    def __init__(self, key: object, first: int, again: yaml.Mark) -> None:
        super().__init__(f"key {key!r} appears twice (first on line {first})")
        self.problem = str(self)
        self.problem_mark = again


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses a key written twice in one mapping (merges ``<<`` aside)."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader reports it below
                continue
            if first is not None:
                raise DuplicateKey(key, first, key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_document(source: str, error: type[Exception]) -> dict[str, Any]:
    """The file's mapping of sections; any problem raises ``error`` with one sentence."""
    try:
        raw = Path(source).read_bytes()
    except OSError as exc:
        raise error(f"cannot read configuration file {source}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"configuration file {source} is not text (byte {exc.start} is not "
                    "UTF-8): is it the YAML file?") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) \
            or "syntax error"
        if isinstance(exc, yaml.reader.ReaderError):
            raise error(f"configuration file {source} is not text ({exc.reason} at "
                        f"character {exc.position}): is it the YAML file?") from None
        raise error(f"{where}: not valid YAML: {problem}") from None
    if data is None:
        raise error(f"configuration file {source} is empty: write at least {{}} to run "
                    "with every default")
    if not isinstance(data, dict):
        raise error(f"configuration file {source} must hold a mapping of sections")
    return data
