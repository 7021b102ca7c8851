"""Paths the way DevLake's router and config-ui's nginx read them.

Pure rules, shared by the configuration (which refuses a name or prefix
DevLake cannot route, naming the key) and the DevLake routing (which builds
the URLs). Nothing here imports the rest of the package.

- The API prefix is ``/api/rest`` through config-ui (nginx proxies it to the
  backend's ``/rest``) or ``/rest`` on the backend itself. Both check the API
  key. There is no ``/api`` route on the backend, and config-ui's ``/api``
  without ``rest`` skips the key check (the UI's own session), so neither is
  a prefix for the daemon.
- A name in a path is escaped exactly as Go's ``URL.EscapedPath`` would
  escape it: ``A-Z a-z 0-9 - _ . ~ $ & + , : ; = @`` stay raw, every other
  byte becomes ``%XX`` in uppercase hex. Any other form makes Go keep the raw
  path, on which DevLake's ``/rest`` re-dispatch finds no route (404).
- config-ui's nginx decodes the path and re-escapes it its own way, leaving
  ``! ' ( ) * [ ]`` raw where Go wants them escaped: through ``/api/rest`` a
  name holding one of them can never be routed. A ``/`` inside a name cannot
  be routed through either prefix.
"""

from __future__ import annotations

from typing import Literal

Prefix = Literal["/api/rest", "/rest"]
PREFIXES: tuple[Prefix, ...] = ("/api/rest", "/rest")

NAME_LIMIT = 100
"""DevLake refuses longer connection and project names (400 ``invalid ...Name``)."""

_GO_KEEP = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                     b"-_.~$&+,:;=@")
NGINX_BREAKS = "!'()*[]"
"""Characters config-ui's nginx sends raw where DevLake needs them escaped."""


def normalize_prefix(value: str) -> Prefix:
    """``value`` as one of :data:`PREFIXES` (trailing slashes ignored); ValueError otherwise."""
    stripped = "/" + value.strip().strip("/")
    if stripped == "/api/rest":
        return "/api/rest"
    if stripped == "/rest":
        return "/rest"
    if stripped == "/api":
        raise ValueError(
            f"{value!r} is not a DevLake API prefix: use /api/rest when base_url is "
            "config-ui (the usual case), or /rest when base_url is the DevLake backend "
            "itself (/api without rest skips the API key and is only for the UI)")
    raise ValueError(
        f"{value!r} is not a DevLake API prefix: use /api/rest when base_url is config-ui, "
        "or /rest when base_url is the DevLake backend itself")


def escape_segment(value: str) -> str:
    """``value`` as Go's ``URL.EscapedPath`` escapes it (uppercase hex)."""
    return "".join(chr(b) if b in _GO_KEEP else f"%{b:02X}" for b in value.encode("utf-8"))


def unroutable_reason(value: str, prefix: Prefix) -> str | None:
    """Why DevLake can never route ``value`` as a path segment under ``prefix``; None if it can."""
    if not value:
        return "it is empty"
    if "/" in value:
        return "it holds '/', which DevLake's router can never route inside a name"
    if value in (".", ".."):
        return "'.' and '..' are removed from paths before DevLake sees them"
    if prefix == "/api/rest":
        bad = sorted({c for c in value if c in NGINX_BREAKS})
        if bad:
            return (f"it holds {' '.join(bad)}, which config-ui's nginx forwards unescaped "
                    "so DevLake answers 404; rename it in DevLake, or set api_prefix: /rest "
                    "with base_url pointing at the DevLake backend")
    return None


def check_name(value: str, prefix: Prefix, what: str = "name") -> str | None:
    """Why ``value`` cannot be a DevLake connection or project name in a path; None if fine."""
    reason = unroutable_reason(value, prefix)
    if reason is not None:
        return reason
    if len(value) > NAME_LIMIT:
        return f"DevLake refuses a {what} longer than {NAME_LIMIT} characters"
    return None
