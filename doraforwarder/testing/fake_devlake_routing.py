"""How a request reaches the fake DevLake's handler: escaping, config-ui, gin's routes.

The path a client sends goes through config-ui's nginx (which re-escapes it
its own way), Go's path unescaping and gin's router (trailing-slash redirect,
static segments before parameters); each step is a pure function here, so
the path rules can be table-tested and the server only wires them. Also the
error answers each layer gives (middleware, DevLake's ``errors.Error``, gin's
404).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

# --- paths --------------------------------------------------------------------------------

_GO_KEEP = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                     b"-_.~$&+,/:;=@")
_GO_KEPT = re.compile(r"[A-Za-z0-9\-_.~$&+,/:;=@]*")
"""Paths Go's escaping leaves as they are (only characters of ``_GO_KEEP``)."""
_NGINX_ESCAPE = frozenset(b' "#%<>?\\^`{|}\x7f') | frozenset(range(0x20)) \
    | frozenset(range(0x80, 0x100))


class BadEscape(ValueError):
    """A ``%`` not followed by two hex digits: Go's server answers 400."""


def go_unescape(raw: str) -> str:
    """Go's ``unescape(s, encodePath)``: ``%XX`` to bytes, ``+`` kept."""
    if "%" not in raw:
        return raw
    out = bytearray()
    data = raw.encode("utf-8", "surrogateescape")
    index = 0
    while index < len(data):
        if data[index] == ord("%"):
            pair = data[index + 1:index + 3]
            if len(pair) != 2 or not all(chr(c) in "0123456789abcdefABCDEF" for c in pair):
                raise BadEscape(raw)
            out.append(int(pair, 16))
            index += 3
        else:
            out.append(data[index])
            index += 1
    return out.decode("utf-8", "surrogateescape")


def go_escape(path: str) -> str:
    """Go's ``escape(path, encodePath)`` (``URL.EscapedPath``): uppercase hex."""
    if _GO_KEPT.fullmatch(path):
        return path
    return "".join(chr(b) if b in _GO_KEEP else f"%{b:02X}"
                   for b in path.encode("utf-8", "surrogateescape"))


def nginx_escape(path: str) -> str:
    """nginx's ``NGX_ESCAPE_URI`` (1.21.1+), used when a rewritten URI is proxied."""
    return "".join(f"%{b:02X}" if b in _NGINX_ESCAPE else chr(b)
                   for b in path.encode("utf-8", "surrogateescape"))


def nginx_normalize(path: str) -> str:
    """nginx's own normalization of a decoded path: slashes merged, ``.``/``..`` resolved.

    A ``..`` above the root is nginx's 400 (raised as :class:`BadEscape`).
    """
    kept: list[str] = []
    segments = re.sub("/{2,}", "/", path).split("/")[1:]
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment in (".", ".."):
            if segment == "..":
                if not kept:
                    raise BadEscape(path)
                kept.pop()
            if last:
                kept.append("")  # "/a/b/.." is "/a/"
            continue
        kept.append(segment)
    return "/" + "/".join(kept)


def through_config_ui(raw_path: str) -> str | None:
    """The raw path config-ui's nginx sends to the backend; None when it serves it itself.

    ``/api/rest/...``: the decoded path, normalized and re-escaped by nginx
    (its rewrite works on the normalized URI), without ``/api``. ``/api/...``:
    the raw path without ``/api`` (its rewrite starts from ``$request_uri``).
    """
    if raw_path.startswith("/api/rest/"):
        return nginx_escape(nginx_normalize(go_unescape(raw_path)))[len("/api"):]
    if raw_path.startswith("/api/"):
        return raw_path[len("/api"):]
    return None


def backend_view(raw_path: str) -> tuple[str, str | None]:
    """(``URL.Path``, ``URL.RawPath``) as Go's ``url.setPath`` sets them."""
    decoded = go_unescape(raw_path)
    return decoded, (None if go_escape(decoded) == raw_path else raw_path)


# --- routes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """Where gin dispatched a webhook request, with the path parameters it took."""

    kind: str
    """deployment, issue, close, pull_request, connections, connection, create_connection."""
    connection_ref: tuple[str, str] | None = None
    """("id", "6") or ("name", "team-build")."""
    project: str | None = None
    issue_key: str | None = None


_ID = "(?P<id>[^/]+)"
_NAME = "(?P<name>[^/]+)"
_KEY = "(?P<key>[^/]+)"
_ROUTES: tuple[tuple[str, str, str], ...] = (
    # gin tries static segments before parameters: by-name before :connectionId.
    ("GET", "connections", "connections"),
    ("POST", "connections", "create_connection"),
    ("GET", f"connections/by-name/{_NAME}", "connection"),
    ("POST", f"connections/by-name/{_NAME}/deployments", "deployment"),
    ("POST", f"connections/by-name/{_NAME}/pull_requests", "pull_request"),
    ("POST", f"connections/by-name/{_NAME}/issues", "issue"),
    ("POST", f"connections/by-name/{_NAME}/issue/{_KEY}/close", "close"),
    ("GET", f"connections/{_ID}", "connection"),
    ("POST", f"connections/{_ID}/deployments", "deployment"),
    ("POST", f"connections/{_ID}/pull_requests", "pull_request"),
    ("POST", f"connections/{_ID}/issues", "issue"),
    ("POST", f"connections/{_ID}/issue/{_KEY}/close", "close"),
    ("POST", "projects/(?P<project>[^/]+)/deployments", "deployment"),
    ("POST", f"{_ID}/deployments", "deployment"),
    ("POST", f"{_ID}/pull_requests", "pull_request"),
    ("POST", f"{_ID}/issues", "issue"),
    ("POST", f"{_ID}/issue/{_KEY}/close", "close"),
)
_PLUGIN = "/plugins/webhook/"
_COMPILED_ROUTES = tuple((method, re.compile(pattern), kind) for method, pattern, kind in _ROUTES)


def _unescape_param(value: str, raw: bool) -> str:
    """gin's parameter value: from the decoded path, or QueryUnescape'd from the raw one."""
    return go_unescape(value.replace("+", " ")) if raw else value


def match_route(method: str, path: str, raw: bool = False) -> Route | None:
    """The webhook route gin dispatches ``path`` (without ``/rest``) to, if any."""
    if not path.startswith(_PLUGIN):
        return None
    tail = path[len(_PLUGIN):]
    for route_method, pattern, kind in _COMPILED_ROUTES:
        if route_method != method:
            continue
        found = pattern.fullmatch(tail)
        if found is None:
            continue
        params = {k: _unescape_param(v, raw) for k, v in found.groupdict().items()}
        ref = (("name", params["name"]) if "name" in params
               else ("id", params["id"]) if "id" in params else None)
        return Route(kind, connection_ref=ref, project=params.get("project"),
                      issue_key=params.get("key"))
    return None


def redirects(path: str) -> bool:
    """gin's trailing-slash redirect: the path without its slash is a route (any method)."""
    if not path.endswith("/") or len(path) <= 1:
        return False
    return any(match_route(method, path[:-1]) for method in ("GET", "POST"))


class HandlerError(Exception):
    """A DevLake ``errors.Error``: rendered ``message (status)`` in DevLake's error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def middleware_error(status: int, message: str) -> web.Response:
    """The API-key middleware's refusal: no status in the message, no ``causes``."""
    return web.json_response({"success": False, "message": message}, status=status)


def devlake_error(status: int, message: str, causes: list[str] | None = None
                   ) -> web.Response:
    """A handler's ``errors.Error`` as DevLake renders it: ``message (status)``."""
    return web.json_response({"success": False, "message": f"{message} ({status})",
                              "causes": causes, "data": None}, status=status)


CONFIG_UI_MAX_BODY = 20 * 1024 * 1024
"""config-ui's nginx.conf: ``client_max_body_size 20m`` (its ``m`` is MiB)."""

_NGINX_TITLES = {401: "Authorization Required", 413: "Request Entity Too Large",
                 502: "Bad Gateway", 504: "Gateway Time-out"}


def nginx_page(status: int) -> web.Response:
    """An answer config-ui's nginx gives itself: its HTML error page (seen on nginx 1.22).

    A 401 asks for basic auth (config-ui's ``ADMIN_USER``/``ADMIN_PASS``)
    with the realm its nginx.conf names.
    """
    title = f"{status} {_NGINX_TITLES[status]}"
    text = (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n")
    headers = {"WWW-Authenticate": 'Basic realm="DevLake Config UI"'} if status == 401 else None
    return web.Response(status=status, text=text, content_type="text/html", headers=headers)


def gin_404() -> web.Response:
    """gin's own answer when no route matches: plain text, not DevLake's JSON."""
    return web.Response(status=404, text="404 page not found", content_type="text/plain")


SUCCESS = {"success": True, "message": "success"}


def peek_route(method: str, raw: str) -> Route | None:
    """The route a request aims at, ignoring keys and escaping (to record injected faults)."""
    try:
        forwarded = through_config_ui(raw)
        path = go_unescape(forwarded if forwarded is not None else raw)
    except BadEscape:
        return None
    return match_route(method, path.removeprefix("/rest"))


def request_kind(route: Route | None) -> str:
    """The kind a request is recorded under (``Posted.kind``)."""
    if route is None:
        return "other"
    if route.kind in ("connection", "connections", "create_connection"):
        return "connection" if route.kind == "connection" else "connections"
    return route.kind


def record_id_of(route: Route | None, body: Any) -> str | None:
    """The deployment id or issue key a request is about, for assertions."""
    if route is None:
        return None
    if route.kind == "close":
        return route.issue_key
    if isinstance(body, dict):
        value = body.get("id") if route.kind == "deployment" else body.get("issueKey")
        return value if isinstance(value, str) else None
    return None
