"""CLI commands, one module each, exposing ``handle(args) -> int`` (the exit code).

Their arguments are in :mod:`.parsers`, which names each module instead of
importing it: a command's module, and what it needs, is imported only when that
command runs.
"""
