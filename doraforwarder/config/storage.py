"""``storage.redis``: how to reach Redis (standalone, Sentinel, Cluster, TLS).

Also how a Redis URL is shown (:func:`masked_url`) and which passwords it
carries (:func:`url_passwords`): a password written in the URL must never
reach a log line, and must be redacted like any other secret.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import quote, unquote, unquote_plus

from pydantic import (
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from doraforwarder.config.fields import (
    Duration,
    Section,
)


def _parse_address(address: str, key: str) -> tuple[str, int]:
    """``host:port`` (IPv6 hosts in brackets) as a pair, or a ValueError naming ``key``."""
    host, sep, port = address.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"{key}: {address!r} is not host:port")
    return host, int(port)


_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?")
"""``storage.redis.address``: a host name, IPv4 or bracketed IPv6, then an optional port."""


class RedisSentinelConfig(Section):
    master: str = ""
    """The name the Sentinels monitor the master under (``sentinel monitor NAME ...``)."""
    addresses: list[str] = Field(default_factory=list)
    """Sentinels as ``host:port``; any one that answers is enough."""


class RedisClusterConfig(Section):
    addresses: list[str] = Field(default_factory=list)
    """Startup nodes as ``host:port``; the client discovers the rest."""


class RedisTlsConfig(Section):
    enabled: bool = False
    ca_file: str | None = None
    """CA bundle that signed the server certificate; the system store when unset."""
    cert_file: str | None = None
    """Client certificate, for servers that require one (``tls-auth-clients yes``)."""
    key_file: str | None = None


class RedisConfig(Section):
    enabled: bool = True
    address: str = "localhost:6379"
    password: str = Field(default="", repr=False)
    database: int = Field(default=0, ge=0)
    key_prefix: str = "dora-metrics"
    url: str | None = None
    """``redis://`` or ``rediss://`` URL; wins over address/password/database."""
    mode: Literal["standalone", "sentinel", "cluster"] = "standalone"
    username: str = ""
    """ACL user, in every mode; empty means the ``default`` user."""
    sentinel: RedisSentinelConfig = Field(default_factory=RedisSentinelConfig)
    cluster: RedisClusterConfig = Field(default_factory=RedisClusterConfig)
    tls: RedisTlsConfig = Field(default_factory=RedisTlsConfig)
    wait_replicas: int | None = Field(default=None, ge=0)
    """Replicas that must acknowledge an outbox write before it counts as staged.

    Unset means 1 in sentinel mode (a failover must not lose what was staged)
    and 0 otherwise.
    """
    wait_timeout: Duration = timedelta(seconds=2)
    backfill_on_data_loss: bool = True
    """When the running daemon finds Redis lost its data, send ArgoCD's kept history again
    from before the loss (the same as ``doraforwarder backfill --since``; see docs/redis.md).
    Off only to run that backfill by hand (say, to review ``--dry-run`` first)."""
    sentinel_password: SecretStr | None = Field(default=None, repr=False, exclude=True)
    """From ``REDIS_SENTINEL_PASSWORD`` or ``REDIS_SENTINEL_PASSWORD_FILE``, never the file."""

    @field_validator("address")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        """Caught here, not as an obscure URL error at the first connection."""
        match = _HOST_PORT.fullmatch(value)
        if match is None or (match[2] is not None and not 0 < int(match[2]) <= 65535):
            raise ValueError(f"{value!r} is not host:port (port 1 to 65535, "
                             "an IPv6 host in brackets)")
        return value

    @model_validator(mode="after")
    def _complete_for_mode(self) -> RedisConfig:
        if self.mode == "sentinel":
            if not self.sentinel.master:
                raise ValueError("sentinel.master is required when mode is sentinel")
            if not self.sentinel.addresses:
                raise ValueError("sentinel.addresses needs at least one host:port "
                                 "when mode is sentinel")
            for address in self.sentinel.addresses:
                _parse_address(address, "sentinel.addresses")
        if self.mode == "cluster":
            if not self.cluster.addresses:
                raise ValueError("cluster.addresses needs at least one host:port "
                                 "when mode is cluster")
            for address in self.cluster.addresses:
                _parse_address(address, "cluster.addresses")
            if self.database:
                raise ValueError("database must be 0 when mode is cluster "
                                 "(Redis Cluster has only database 0)")
        if self.url:
            if self.mode != "standalone":
                raise ValueError(f"url is for mode standalone; with mode {self.mode} "
                                 f"list the servers under {self.mode}.addresses")
            if not re.match(r"(rediss?|unix)://", self.url):
                raise ValueError("url must start with redis://, rediss:// or unix://")
            if self.tls.enabled and not self.url.startswith("rediss://"):
                raise ValueError("tls.enabled needs a rediss:// url (or no url)")
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self.tls, name)
            if path and not Path(path).is_file():
                raise ValueError(f"tls.{name}: {path!r} is not a readable file")
        if bool(self.tls.cert_file) != bool(self.tls.key_file):
            raise ValueError("tls.cert_file and tls.key_file go together")
        return self

    @property
    def keyspace(self) -> str:
        """The prefix every key starts with.

        In cluster mode the prefix is a hash tag (``{dora-metrics}``), so every
        key lands in one slot and the transactions and Lua scripts spanning app
        state, dedupe claims and streams stay legal. Standalone and sentinel
        keep the untagged prefix, so existing installations keep their data.
        """
        prefix = self.key_prefix.rstrip(":")
        if self.mode == "cluster" and not (prefix.startswith("{") and prefix.endswith("}")):
            return "{" + prefix + "}"
        return prefix

    @property
    def replicas_to_wait_for(self) -> int:
        if self.wait_replicas is not None:
            return self.wait_replicas
        return 1 if self.mode == "sentinel" else 0

    def server_addresses(self) -> list[tuple[str, int]]:
        """Sentinels (sentinel mode) or startup nodes (cluster mode) as pairs."""
        if self.mode == "sentinel":
            return [_parse_address(a, "sentinel.addresses") for a in self.sentinel.addresses]
        if self.mode == "cluster":
            return [_parse_address(a, "cluster.addresses") for a in self.cluster.addresses]
        return [_parse_address(self.address, "address")]

    def connection_url(self) -> str:
        """The URL redis-py connects with (password embedded; never log it)."""
        if self.url:
            return self.url
        user = quote(self.username, safe="") if self.username else ""
        password = quote(self.password, safe="")  # a '/' or '@' in it must not end the host
        auth = f"{user}:{password}@" if self.password or user else ""
        scheme = "rediss" if self.tls.enabled else "redis"
        return f"{scheme}://{auth}{self.address}/{self.database}"

    def display_url(self) -> str:
        """Where the daemon connects, with any password shown as ``***``."""
        if self.mode == "sentinel":
            return f"sentinel://{','.join(self.sentinel.addresses)}/{self.sentinel.master}"
        if self.mode == "cluster":
            scheme = "rediss" if self.tls.enabled else "redis"
            return f"{scheme}+cluster://{','.join(self.cluster.addresses)}"
        return masked_url(self.connection_url())

    def url_passwords(self) -> list[str]:
        """The passwords written inside ``url`` (for the log redactor), as written and decoded."""
        return url_passwords(self.url or "")


_URL_SECRET_PARAMS = frozenset({"password", "sentinel_password"})
"""Query parameters of a Redis URL that redis-py reads as passwords."""


def _url_parts(url: str) -> tuple[str, str, str, str]:
    """``scheme://``, userinfo, the rest up to the query, and the query of ``url``.

    The userinfo ends at the *last* ``@`` before the query, as redis-py
    (``urlparse``) reads it, so an unencoded ``@`` or ``/`` in a password
    stays in the userinfo rather than showing as part of the host.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "", "", url, ""
    before_query, qmark, query = rest.partition("?")
    userinfo, at, location = before_query.rpartition("@")
    return scheme + sep, (userinfo + at), location, (qmark + query)


def masked_url(url: str) -> str:
    """``url`` with the password of its userinfo and any ``password=`` parameter as ``***``."""
    scheme, userinfo, location, query = _url_parts(url)
    if userinfo:
        user, colon, _ = userinfo[:-1].partition(":")
        userinfo = f"{user}:***@" if colon else f"{user}@"
    if query:
        params = []
        for param in query[1:].split("&"):
            name, eq, _ = param.partition("=")
            params.append(f"{name}=***" if eq and unquote(name).lower() in _URL_SECRET_PARAMS
                          else param)
        query = "?" + "&".join(params)
    return scheme + userinfo + location + query


def url_passwords(url: str) -> list[str]:
    """Every password inside ``url``: the userinfo's and ``password=``'s, raw and decoded."""
    _, userinfo, _, query = _url_parts(url)
    found: list[str] = []
    if userinfo:
        found.append(userinfo[:-1].partition(":")[2])
    for param in query[1:].split("&") if query else ():
        name, eq, value = param.partition("=")
        if eq and unquote(name).lower() in _URL_SECRET_PARAMS:
            found.append(value)
    decoded = [unquote(value) for value in found] + [unquote_plus(value) for value in found]
    return list(dict.fromkeys(value for value in found + decoded if value))


class StorageConfig(Section):
    redis: RedisConfig = Field(default_factory=RedisConfig)
