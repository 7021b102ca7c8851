"""Configuration: the reference YAML file, our additions, environment overrides.

The file format of redhat-appstudio/dora-metrics loads unchanged, so its users
switch without edits. Every section forbids unknown keys: a typo is an error
naming the key and the file, never a silently ignored setting.

Secrets belong in the environment (the one exception, as in the reference:
``webrca.token`` when ``OFFLINE_TOKEN`` is unset, with a warning). They come from ``GITHUB_TOKEN``,
``DEVLAKE_WEBHOOK_TOKEN`` and ``OFFLINE_TOKEN`` (or ``*_FILE`` variables naming a
mounted secret) and are held as :class:`pydantic.SecretStr`, so printing the
configuration can never show them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, unquote, unquote_plus

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from doraforwarder.config_file import read_document
from doraforwarder.records import Environment as EnvironmentName
from doraforwarder.webhook_paths import Prefix, check_name, normalize_prefix

DEFAULT_CONFIG_PATH = "config/config.yaml"
REFERENCE_CONFIG_PATH = "configs/config.yaml"
"""Where the reference reads its file (from the working directory, always)."""
CONFIG_ENV_VAR = "DORAFORWARDER_CONFIG"
DOTENV_FILE = ".env"

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ConfigError(Exception):
    """A configuration problem, already phrased for the operator (exit code 2)."""


def parse_duration(value: object) -> timedelta:
    """Parse ``30s``, ``5m``, ``1h``, ``1h30m``, ``30d`` or plain seconds.

    The reference uses Go duration strings; plain numbers are seconds.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m or 1h")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return timedelta(seconds=float(value))
    if not isinstance(value, str):
        raise ValueError("expected a duration such as 30s, 5m or 1h")
    text = value.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return timedelta(seconds=float(text))
    position = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if not text or position != len(text):
        raise ValueError(f"unparseable duration {value!r}: use forms like 30s, 5m, 1h, 1h30m")
    return timedelta(seconds=total)


def format_duration(value: timedelta) -> str:
    """Render a duration the way an operator writes it (``90s`` -> ``1m30s``)."""
    seconds = value.total_seconds()
    if seconds and seconds < 1:
        return f"{round(seconds * 1000)}ms"
    remaining = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, remaining = divmod(remaining, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts) or "0s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]
"""A ``timedelta`` read from Go-style duration strings and printed back the same way."""


def _string_or_number(value: object) -> object:
    """The reference quotes ports and ids (``"8080"``, ``"1"``); accept numbers too."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    return value


StrOrInt = Annotated[str, BeforeValidator(_string_or_number)]


SSO_ENDPOINT = (
    "https://sso.redhat.com/auth/realms/redhat-external/protocol/openid-connect/token"
)


def _production_only() -> list[EnvironmentName]:
    return ["PRODUCTION"]


class Section(BaseModel):
    """Base of every section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


OPENSHIFT_USER_PATH = "/apis/user.openshift.io/v1/users/~"


class OpenShiftAuthConfig(Section):
    """``server.api_auth: openshift``: who the bearer token belongs to, as the reference asks."""

    api_url: str = "https://api.openshift.com"
    """The API whose ``/apis/user.openshift.io/v1/users/~`` names the token's user (the
    reference's is OCM's, api.openshift.com; a cluster's API server answers it too)."""
    email_domains: list[str] = Field(default_factory=lambda: ["redhat.com"], min_length=1)
    """The e-mail domains admitted (the reference admits ``@redhat.com`` only)."""
    timeout: Duration = timedelta(seconds=10)
    cache_ttl: Duration = timedelta(seconds=60)
    """How long an admitted token is remembered (refusals are never cached)."""

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("email_domains")
    @classmethod
    def _plain_domains(cls, value: list[str]) -> list[str]:
        domains = [domain.strip().lower().removeprefix("@") for domain in value]
        for domain in domains:
            if not domain or "@" in domain or " " in domain:
                raise ValueError(f"{domain!r} is not an e-mail domain (write redhat.com)")
        return domains

    @property
    def user_url(self) -> str:
        return self.api_url + OPENSHIFT_USER_PATH


class KubernetesAuthConfig(Section):
    """``server.api_auth: kubernetes``: how bearer tokens are reviewed by the API server."""

    audiences: list[str] = Field(default_factory=lambda: ["doraforwarder"])
    """Audiences the TokenReview asks for: a caller's token must be issued for one of them
    (``kubectl create token SA --audience doraforwarder``), so a token that reads the
    inventory is not also a key to the API server. ``[]``: the API server's own audiences
    (any token valid against the API server, as before)."""
    timeout: Duration = timedelta(seconds=10)
    """Longest wait for one TokenReview or SubjectAccessReview (then 503)."""
    cache_ttl: Duration = timedelta(seconds=30)
    """How long a review's answer (accepted or not) is remembered, by the token's digest."""
    unknown_tokens_per_minute: int = Field(default=30, ge=1)
    """Failed TokenReviews allowed per minute (a burst of as many): past it, a token not
    in the cache gets 429 without a review, so random tokens cannot flood the API server."""


class ServerConfig(Section):
    port: StrOrInt = "8080"
    environment: str = "production"
    log_level: Literal["debug", "info", "warning", "warn", "error"] = "info"
    host: str = "0.0.0.0"  # noqa: S104 - a pod serves its probes on every interface
    log_format: Literal["auto", "json", "console"] = "auto"
    shutdown_timeout: Duration = timedelta(seconds=20)
    ready_grace: Duration = timedelta(seconds=30)
    """How long Redis may be unreachable before ``/readyz`` answers 503."""
    api_auth: Literal["none", "token", "kubernetes", "openshift"] | None = None
    """Who may read the application inventory; unset means ``none`` on a loopback
    host and ``token`` anywhere else (see :attr:`effective_api_auth`)."""
    openshift: OpenShiftAuthConfig = Field(default_factory=OpenShiftAuthConfig)
    kubernetes: KubernetesAuthConfig = Field(default_factory=KubernetesAuthConfig)
    cors_allow_origins: list[str] = Field(default_factory=lambda: ["*"])
    """Origins whose browser pages may call the API (the reference allows any: ``*``);
    an empty list sends no CORS headers."""

    @property
    def listens_on_loopback(self) -> bool:
        return self.host in ("localhost", "::1") or self.host.startswith("127.")

    @property
    def effective_api_auth(self) -> Literal["none", "token", "kubernetes", "openshift"]:
        if self.api_auth is not None:
            return self.api_auth
        return "none" if self.listens_on_loopback else "token"

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("port")
    @classmethod
    def _valid_port(cls, value: str) -> str:
        if not value.isdigit() or not 0 <= int(value) <= 65535:
            raise ValueError(f"port must be a number from 0 to 65535, got {value!r}")
        return value

    @property
    def port_number(self) -> int:
        return int(self.port)


REFERENCE_PRODUCTS = ("konflux",)
"""The only product whose incidents the reference forwards (with component ``konflux``)."""


class WebRCAConfig(Section):
    enabled: bool = False
    api_url: str = "https://api.openshift.com/api/web-rca/v1/incidents"
    interval: Duration = timedelta(minutes=30)
    token: str = Field(default="", repr=False, exclude=True)
    """The reference's place for the WebRCA offline token: used only when ``OFFLINE_TOKEN``
    (and ``OFFLINE_TOKEN_FILE``) is unset, with a warning; never printed."""
    token_url: str = SSO_ENDPOINT
    client_id: str = "cloud-services"
    products: list[str] = Field(default_factory=lambda: list(REFERENCE_PRODUCTS))
    """Incidents of these products are forwarded, filed under the first one listed that
    they touch. Absent: ``[konflux]``, what the reference hard-codes (its file has no such
    key), so its users forward what they forwarded before. ``[]``: every incident."""

    @property
    def products_defaulted(self) -> bool:
        """True when the file does not set ``products`` (the reference's ``konflux`` only)."""
        return "products" not in self.model_fields_set
    incident_url: str = "https://web-rca.devshift.net/incident/{incident_id}"
    close_resolved: bool = False
    page_size: int = Field(default=100, ge=1, le=1000)
    timeout_seconds: float = Field(default=30.0, gt=0)

    @field_validator("incident_url")
    @classmethod
    def _has_placeholder(cls, value: str) -> str:
        if "{incident_id}" not in value:
            raise ValueError("incident_url must contain the placeholder {incident_id}")
        return value


ALERT_MATCHER = re.compile(
    r'\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>=~|!~|!=|=)\s*(?P<value>.*?)\s*')
"""One Alertmanager matcher: ``name=value``, ``!=``, ``=~`` (regex), ``!~``; the value may be
double-quoted as Alertmanager writes it (``severity="critical"``)."""


class AlertmanagerConfig(Section):
    """``alertmanager``: which alerts received on ``POST /api/v1/alertmanager`` are incidents."""

    enabled: bool = False
    matchers: list[str] = Field(default_factory=lambda: ["severity=critical"])
    """Alertmanager matchers every alert must satisfy to be an incident (all of them);
    ``[]``: every alert received. A label an alert lacks matches as the empty string."""
    component_label: str = "component"
    """The label naming the component: routed like a deployment of that component (the
    global target and the teams whose ``argocd_components`` hold it)."""
    title: str = "{alertname}"
    """The issue title: ``{name}`` is replaced by the annotation, else the label, ``name``
    (``"{alertname}: {summary}"``); a title left empty is the alert name."""
    incident_key: Literal["fingerprint", "group_key"] = "fingerprint"
    """One incident per firing alert (``fingerprint``) or per firing alert group
    (``group_key``, Alertmanager's ``groupKey``)."""
    max_body: ByteSize = Field(default=ByteSize(2**20), ge=1)
    """Largest notification accepted (``1MiB``); a larger one is answered 413."""
    state_ttl: Duration = timedelta(days=30)
    """How long what was seen of an alert (or group) is kept after its last notification."""

    @field_validator("matchers")
    @classmethod
    def _valid_matchers(cls, value: list[str]) -> list[str]:
        for text in value:
            match = ALERT_MATCHER.fullmatch(text)
            if match is None:
                raise ValueError(f"{text!r} is not a matcher (name=value, name!=value, "
                                 "name=~regex or name!~regex)")
            if match.group("op") in ("=~", "!~"):
                raw = match.group("value")
                if len(raw) >= 2 and raw[0] == raw[-1] == '"':
                    raw = raw[1:-1]
                try:
                    re.compile(raw)
                except re.error as exc:
                    raise ValueError(f"{text!r}: invalid regular expression: {exc}") from None
        return value

    @field_validator("component_label")
    @classmethod
    def _label_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError(f"{value!r} is not a label name")
        return value


ENVIRONMENT_MATCHERS = (
    "path",
    "app",
    "namespace",
    "project",
    "destination_namespace",
    "destination",
    "repo_url",
)


class EnvironmentRule(Section):
    """One ``argocd.environment_rules`` entry: one matcher (a regular expression
    searched in that field of the Application) and the environment it gives."""

    path: str | None = None
    app: str | None = None
    namespace: str | None = None
    project: str | None = None
    destination_namespace: str | None = None
    destination: str | None = None
    """Searched in the destination name and in the destination server URL."""
    repo_url: str | None = None
    environment: EnvironmentName

    @field_validator("environment", mode="before")
    @classmethod
    def _upper_environment(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_valid_matcher(self) -> EnvironmentRule:
        given = [key for key in ENVIRONMENT_MATCHERS if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError(
                f"needs exactly one matcher among {', '.join(ENVIRONMENT_MATCHERS)} "
                f"(got {', '.join(given) or 'none'})"
            )
        try:
            re.compile(getattr(self, given[0]))
        except re.error as exc:
            raise ValueError(f"{given[0]}: invalid regular expression: {exc}") from None
        return self

    @property
    def matcher(self) -> tuple[str, re.Pattern[str]]:
        """The matched field and its compiled expression (``re`` caches compilations)."""
        key = next(key for key in ENVIRONMENT_MATCHERS if getattr(self, key) is not None)
        return key, re.compile(getattr(self, key))


class ArgoCDConfig(Section):
    enabled: bool = True
    namespaces: list[str] = Field(default_factory=lambda: ["argocd"])
    components_to_ignore: list[str] = Field(default_factory=list)
    known_clusters: list[str] = Field(default_factory=list)
    repository_blacklist: list[str] = Field(default_factory=list)
    environments: list[EnvironmentName] = Field(default_factory=_production_only)
    """Environments forwarded; apps in any other are skipped."""
    environment_rules: list[EnvironmentRule] = Field(default_factory=list)
    """Ordered; the first rule whose matcher matches gives the environment (after the
    ``doraforwarder.io/environment`` annotation, before the path rules)."""
    default_environment: EnvironmentName = "PRODUCTION"
    """The environment of an app no annotation, rule or source path classifies."""
    failures_as_incidents: bool = False
    """A sync ending Degraded is a SUCCESS deployment, and a production app Degraded for
    longer than ``incident_after`` is an incident (resolved when Healthy again)."""
    incident_after: Duration = timedelta(minutes=5)
    health_timeout: Duration = timedelta(minutes=10)
    unsettled_result: Literal["SUCCESS", "FAILURE"] = "SUCCESS"
    dedupe_scope: Literal["component", "cluster"] = "component"
    dedupe_window: Duration = timedelta(hours=24)
    state_ttl: Duration = timedelta(days=30)
    kubeconfig: str | None = None
    context: str | None = None
    workers: int = Field(default=8, ge=1, le=256)
    """Applications are decided in parallel across this many ordered lanes."""
    queue_size: int = Field(default=1000, ge=1)
    """Events waiting per lane before the watch stops reading (back-pressure)."""
    watch_timeout: Duration = timedelta(minutes=5)

    @field_validator("default_environment", mode="before")
    @classmethod
    def _upper_default_environment(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("environments", mode="before")
    @classmethod
    def _upper_environments(cls, value: object) -> object:
        if isinstance(value, list):
            return [item.upper() if isinstance(item, str) else item for item in value]
        return value

    @field_validator("namespaces")
    @classmethod
    def _namespaces_not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError('list at least one namespace, or ["*"] for every namespace')
        if "*" in value and len(value) > 1:
            raise ValueError('"*" watches every namespace and cannot be combined with names')
        return value

    @property
    def all_namespaces(self) -> bool:
        return self.namespaces == ["*"]


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


DEFAULT_TOKEN_ENV = "DEVLAKE_WEBHOOK_TOKEN"  # noqa: S105 - a variable's name, not a secret
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _env_name(value: str) -> str:
    if not _ENV_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not an environment variable name")
    return value


TokenEnvName = Annotated[str, AfterValidator(_env_name)]
"""The name of an environment variable that holds a DevLake API key."""


class TeamConfig(Section):
    name: str
    project_id: StrOrInt | None = None
    connection_name: str | None = None
    project_name: str | None = None
    argocd_components: list[str] = Field(default_factory=list)
    webrca_products: list[str] = Field(default_factory=list)
    token_env: TokenEnvName | None = None
    """Environment variable holding this team's DevLake API key (``<NAME>_FILE``: a file);
    unset: the key of ``integration.devlake.token_env``."""

    @model_validator(mode="after")
    def _exactly_one_target(self) -> TeamConfig:
        given = [v for v in (self.project_id, self.connection_name, self.project_name) if v]
        if len(given) != 1:
            raise ValueError(
                f"team {self.name!r} needs exactly one of project_id, connection_name "
                "or project_name"
            )
        return self


class DevLakeConfig(Section):
    enabled: bool = True
    base_url: str = ""
    project_id: StrOrInt | None = None
    """The global webhook connection id (the reference calls it a project id)."""
    connection_name: str | None = None
    project_name: str | None = None
    timeout_seconds: float = Field(default=30, gt=0)
    api_prefix: str = "/api/rest"
    """``/api/rest`` when base_url is config-ui (default), ``/rest`` on the DevLake backend."""
    token_env: TokenEnvName = DEFAULT_TOKEN_ENV
    """Environment variable holding the global target's API key (``<NAME>_FILE``: a file)."""
    refused_recheck: Duration | None = None
    """How often one entry of a target DevLake refuses (401/403) is tried again (unset:
    ``delivery.max_backoff``); the others wait in the outbox meanwhile."""
    teams: list[TeamConfig] = Field(default_factory=list)
    deployment_commits: Literal["head", "range"] = "head"
    """``head``: one row per (deployment, repository) holding the deployed commit, dated
    with the deployment's own start and finish (what DevLake's lead time expects).
    ``range``: every commit between the previous image tag and the new one, with author
    dates (the reference's rows; distorts DevLake's own lead time)."""

    @property
    def prefix(self) -> Prefix:
        """``api_prefix`` as DevLake routes it (validated when the section is enabled)."""
        return normalize_prefix(self.api_prefix)

    def team_token_env(self, team: TeamConfig) -> str:
        return team.token_env or self.token_env

    @model_validator(mode="after")
    def _complete_when_enabled(self) -> DevLakeConfig:
        if not self.enabled:
            return self
        if not self.base_url:
            raise ValueError("base_url is required when integration.devlake is enabled")
        if not re.match(r"https?://", self.base_url):
            raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        try:
            prefix = normalize_prefix(self.api_prefix)
        except ValueError as exc:
            raise ValueError(f"integration.devlake.api_prefix: {exc}") from None
        given = [v for v in (self.project_id, self.connection_name, self.project_name) if v]
        if len(given) != 1:
            raise ValueError(
                "the global target needs exactly one of project_id, connection_name "
                "or project_name"
            )
        _check_target_names("integration.devlake", self.project_id, self.connection_name,
                            self.project_name, prefix)
        seen: dict[tuple[str, str], str] = {}
        token_envs: dict[str, tuple[str, str]] = {}
        global_key = _target_key(self.project_id, self.connection_name, self.project_name)
        token_envs[global_key] = ("integration.devlake", self.token_env)
        for index, team in enumerate(self.teams):
            where = f"integration.devlake.teams[{index}]"
            _check_target_names(where, team.project_id, team.connection_name,
                                team.project_name, prefix)
            target = team.project_id or team.connection_name or team.project_name or ""
            key = _target_key(team.project_id, team.connection_name, team.project_name)
            env = self.team_token_env(team)
            other = token_envs.setdefault(key, (where, env))
            if other[1] != env:
                raise ValueError(
                    f"{where} ({team.name!r}) and {other[0]} send to the same DevLake target "
                    f"{target!r} but name different keys ({env} and {other[1]}): one "
                    "target has one key, set the same token_env on both")
            for component in team.argocd_components:
                previous = seen.get((component, target))
                if previous is not None:
                    raise ValueError(
                        f"teams {previous!r} and {team.name!r} both route component "
                        f"{component!r} to the same target {target!r}"
                    )
                seen[(component, target)] = team.name
        return self

    def token_envs(self) -> list[str]:
        """Every environment variable a target's key is read from (default first)."""
        names = [self.token_env, *(self.team_token_env(team) for team in self.teams)]
        return list(dict.fromkeys(names))


def _target_key(project_id: str | None, connection_name: str | None,
                project_name: str | None) -> str:
    if project_id:
        return f"connection_id:{project_id}"
    if connection_name:
        return f"connection_name:{connection_name}"
    return f"project_name:{project_name}"


def _check_target_names(where: str, project_id: str | None, connection_name: str | None,
                        project_name: str | None, prefix: Prefix) -> None:
    """Refuse a target DevLake can never route, naming the key that holds it."""
    if project_id and not (project_id.isascii() and project_id.isdigit()
                           and int(project_id) >= 1):
        raise ValueError(
            f"{where}.project_id: {project_id!r} is not a webhook connection id (a number "
            "from 1); use connection_name for a connection's name")
    for key, value, what in (("connection_name", connection_name, "connection name"),
                             ("project_name", project_name, "project name")):
        if not value:
            continue
        reason = check_name(value, prefix, what)
        if key == "project_name" and reason is None:
            reason = check_name(f"{value}_deployments", prefix, "connection name")
            if reason is not None:
                reason = f"its incident connection {value}_deployments: {reason}"
        if reason is not None:
            raise ValueError(f"{where}.{key}: DevLake cannot route {value!r}: {reason}")


class IntegrationConfig(Section):
    devlake: DevLakeConfig = Field(default_factory=lambda: DevLakeConfig(enabled=False))


class ImageRepositoryRule(Section):
    prefix: str
    repo: str = Field(validation_alias=AliasChoices("repo", "repository", "url"))


class GitHubConfig(Section):
    api_url: str = "https://api.github.com"
    image_repositories: list[ImageRepositoryRule] = Field(default_factory=list)
    tag_patterns: list[str] = Field(default_factory=list)
    max_commits: int = Field(default=250, ge=1, le=10000)
    resolve_timeout: Duration = timedelta(minutes=30)
    timeout_seconds: float = Field(default=30, gt=0)
    search_cache_ttl: Duration = timedelta(days=30)
    negative_cache_ttl: Duration = timedelta(hours=1)
    initial_backoff: Duration = timedelta(seconds=1)
    """First retry delay after a network error or a 5xx (exponential, full jitter)."""
    max_backoff: Duration = timedelta(minutes=5)
    """Longest retry delay; GitHub look-ups retry until ``resolve_timeout``."""

    @field_validator("tag_patterns")
    @classmethod
    def _patterns_have_sha_group(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"tag pattern {pattern!r} is not a regular expression: {exc}"
                ) from None
            if "sha" not in compiled.groupindex:
                raise ValueError(f"tag pattern {pattern!r} needs a named group (?P<sha>...)")
        return value


class RegistryLabelRule(Section):
    """A pair of image labels a build writes: the commit, and the repository it is of."""

    revision: str = Field(min_length=1)
    source: str | None = None
    """Absent: the repository comes from ``github.image_repositories`` or the commit search."""


class RegistryConfig(Section):
    """Commits from OCI image labels, for images whose tag carries no SHA (``registry``)."""

    enabled: bool = False
    """Off by default: the reference never calls a registry, and a NetworkPolicy may not let
    the pods reach one."""
    platform: str = ""
    """``os/arch[/variant]`` picked from a multi-platform index; empty: ``linux/amd64``,
    else the first entry (every platform of one build carries the same revision)."""
    labels: list[RegistryLabelRule] = Field(default_factory=list)
    """Label pairs tried before the OCI and OpenShift ones."""
    credentials_files: list[str] = Field(default_factory=list)
    """``.dockerconfigjson`` (or ``.dockercfg``) files, a pull Secret mounted as a volume."""
    plain_http: list[str] = Field(default_factory=list)
    """Registries (``host[:port]``) reached over plain HTTP instead of HTTPS."""
    timeout_seconds: float = Field(default=10, gt=0)
    timeouts: dict[str, float] = Field(default_factory=dict)
    """Per registry (``host[:port]`` -> seconds), for a slow one."""
    max_retry_after: Duration = timedelta(seconds=60)
    """Longest wait a registry's ``429 Retry-After`` is obeyed for (the deadline bounds it too)."""

    @field_validator("platform")
    @classmethod
    def _platform_form(cls, value: str) -> str:
        parts = value.strip().split("/")
        if value.strip() and not (2 <= len(parts) <= 3 and all(parts)):
            raise ValueError(f"platform {value!r} is not os/arch or os/arch/variant")
        return value.strip()

    @field_validator("timeouts")
    @classmethod
    def _positive_timeouts(cls, value: dict[str, float]) -> dict[str, float]:
        for host, seconds in value.items():
            if seconds <= 0:
                raise ValueError(f"timeout of registry {host!r} must be more than 0 seconds")
        return value


class DeliveryConfig(Section):
    workers: int = Field(default=4, ge=1, le=128)
    initial_backoff: Duration = timedelta(seconds=1)
    """First retry delay of a DevLake delivery."""
    max_backoff: Duration = timedelta(minutes=5)
    """Longest retry delay of a DevLake delivery; deliveries never give up."""
    claim_idle: Duration = timedelta(seconds=60)
    max_retry_after: Duration = timedelta(minutes=15)
    """Longest wait a DevLake ``Retry-After`` (429) is obeyed for: a peer asking for days
    (``Retry-After: 999999999``) must not park its target until a restart."""
    refused_max_held: int = Field(default=1000, ge=1)
    """Entries of one refused (401/403) target kept in memory; the rest of its backlog
    waits in Redis (parked in the consumer group) until DevLake accepts the target again."""
    refused_max_held_bytes: ByteSize = Field(default=ByteSize(8 * 2**20), ge=1)
    """And at most this much of their stored size (``8MiB``, ``512KiB`` or bytes): with
    ``deployment_commits: range`` one entry may be 100 KB in Redis, and the process grows by
    about 6 times what it holds, so a count alone does not bound memory. One entry is
    always held."""
    max_held_bytes: ByteSize = Field(default=ByteSize(16 * 2**20), ge=1)
    """The stored size of the entries held in memory for delivery (``16MiB``; the process
    grows by about 6 times that: 180 MB RSS in all at 16MiB, bench/held.py); the outbox
    beyond it waits in Redis, read as room frees. A refused target's entries are bounded
    by ``refused_max_held(_bytes)`` instead."""
    resolvers: int = Field(default=2, ge=1, le=64)
    """Workers turning detected deployments into payloads (GitHub look-ups)."""


class Settings(Section):
    """The whole configuration, as validated from file and environment."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    webrca: WebRCAConfig = Field(default_factory=WebRCAConfig)
    alertmanager: AlertmanagerConfig = Field(default_factory=AlertmanagerConfig)
    argocd: ArgoCDConfig = Field(default_factory=ArgoCDConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    integration: IntegrationConfig = Field(default_factory=IntegrationConfig)
    github: GitHubConfig = Field(default_factory=GitHubConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)

    @model_validator(mode="before")
    @classmethod
    def _github_retries_from_delivery(cls, data: Any) -> Any:
        """Old files keep their GitHub retry timing (see :func:`_migrate`)."""
        return _migrate(data)[0] if isinstance(data, Mapping) else data


class Secrets(BaseModel):
    """Tokens from the environment. ``SecretStr`` keeps them out of every repr."""

    model_config = ConfigDict(frozen=True)

    github_token: SecretStr | None = None
    devlake_webhook_token: SecretStr | None = None
    offline_token: SecretStr | None = None
    redis_password: SecretStr | None = None
    redis_sentinel_password: SecretStr | None = None
    redis_url_passwords: tuple[SecretStr, ...] = ()
    """Passwords written inside ``storage.redis.url`` (userinfo or ``?password=``)."""
    devlake_keys: dict[str, SecretStr | None] = Field(default_factory=dict)
    """DevLake API keys by the ``token_env`` naming them (``integration.devlake`` and teams)."""

    def devlake_key(self, token_env: str = DEFAULT_TOKEN_ENV) -> SecretStr | None:
        """The key ``token_env`` names; the default one is ``devlake_webhook_token``."""
        if token_env in self.devlake_keys:
            return self.devlake_keys[token_env]
        return self.devlake_webhook_token if token_env == DEFAULT_TOKEN_ENV else None

    def values(self) -> list[str]:
        """Every secret value, for the log redaction processor."""
        found = []
        for secret in (
            self.github_token,
            self.devlake_webhook_token,
            self.offline_token,
            self.redis_password,
            self.redis_sentinel_password,
            *self.redis_url_passwords,
            *self.devlake_keys.values(),
        ):
            if secret is not None and secret.get_secret_value():
                found.append(secret.get_secret_value())
        return found


ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "PORT": ("server", "port"),
    "LOG_LEVEL": ("server", "log_level"),
    "ENVIRONMENT": ("server", "environment"),
    "REDIS_HOST": ("storage", "redis", "address"),
    "REDIS_PORT": ("storage", "redis", "address"),
    "REDIS_PASSWORD": ("storage", "redis", "password"),
    "WEBRCA_INTERVAL": ("webrca", "interval"),
}
"""The reference's variables and the file key each one overrides: a validation error
of that key names the variable the operator set, not a key absent from their file.
``WEBRCA_INTERVAL`` is the exception, as in the reference: it is used only when the
file does not set ``webrca.interval``."""
SECRET_OVERRIDES = frozenset({"REDIS_PASSWORD"})
"""Overrides whose value is never shown, not even in part, in an error."""

Origins = Mapping[tuple[str, ...], Mapping[str, str]]
"""File key -> the variables (name -> value) that set it."""


class EnvironmentOverrides(BaseSettings):
    """Variables the reference honours, read with pydantic-settings."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    port: str | None = None
    log_level: str | None = None
    environment: str | None = None
    redis_host: str | None = None
    redis_port: str | None = None
    redis_password: str | None = None
    redis_sentinel_password: str | None = None
    redis_sentinel_password_file: str | None = None
    github_token: str | None = None
    github_token_file: str | None = None
    devlake_webhook_token: str | None = None
    devlake_webhook_token_file: str | None = None
    offline_token: str | None = None
    offline_token_file: str | None = None
    webrca_interval: str | None = None


class LoadedConfig(BaseModel):
    """What the daemon runs with: settings, secrets and where they came from."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    settings: Settings
    secrets: Secrets
    source: str
    deprecations: tuple[str, ...] = ()
    """Old keys that still load, each with what to write instead (logged once at start)."""
    offline_token_from_file: bool = False
    """The WebRCA token is ``webrca.token`` of the file (no ``OFFLINE_TOKEN``), as the
    reference allows; a warning says it belongs in the environment."""

    def redacted(self) -> dict[str, Any]:
        """The effective configuration with every secret shown as ``***``."""
        data = self.settings.model_dump(mode="json")
        redis = data["storage"]["redis"]
        if redis.get("password"):
            redis["password"] = "***"  # noqa: S105 - a mask, not a password
        if redis.get("url"):
            redis["url"] = self.settings.storage.redis.display_url()
        data["secrets"] = {
            name: ("***" if value is not None else None)
            for name, value in (
                ("GITHUB_TOKEN", self.secrets.github_token),
                ("DEVLAKE_WEBHOOK_TOKEN", self.secrets.devlake_webhook_token),
                ("OFFLINE_TOKEN", self.secrets.offline_token),
                *self.secrets.devlake_keys.items(),
            )
        }
        return data


def _read_secret(env: EnvironmentOverrides, name: str) -> SecretStr | None:
    return _secret(name, getattr(env, name), getattr(env, f"{name}_file"))


def _read_named_secret(name: str) -> SecretStr | None:
    """The secret in environment variable ``name``, or in the file ``<name>_FILE`` names."""
    return _secret(name, os.environ.get(name), os.environ.get(f"{name}_FILE"))


def _secret(name: str, value: str | None, file_name: str | None) -> SecretStr | None:
    if file_name:
        try:
            value = Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"{name.upper()}_FILE names {file_name!r}, which cannot be read: {exc.strerror}"
            ) from None
    return SecretStr(value) if value else None


def _section(data: dict[str, Any], *path: str) -> dict[str, Any] | None:
    """The nested mapping at ``path``, created when absent; None when the file has a non-mapping."""
    node: Any = data
    for key in path:
        if not isinstance(node, dict):
            return None
        if node.get(key) is None:
            node[key] = {}
        node = node[key]
    return node if isinstance(node, dict) else None


def _apply_overrides(data: dict[str, Any],
                     env: EnvironmentOverrides) -> tuple[dict[str, Any], Origins]:
    """Environment variables win over the file, as in the reference.

    Returns the document and which keys the environment set (see :data:`ENV_OVERRIDES`).
    """
    _check_number("PORT", env.port)
    _check_number("REDIS_PORT", env.redis_port)
    origins: dict[tuple[str, ...], dict[str, str]] = {}
    webrca = _section(data, "webrca")
    interval_in_file = webrca is not None and webrca.get("interval") not in (None, "")
    for name, location in ENV_OVERRIDES.items():
        value = getattr(env, name.lower())
        if value and not (name == "WEBRCA_INTERVAL" and interval_in_file):
            origins.setdefault(location, {})[name] = value
    if webrca is not None and env.webrca_interval and not interval_in_file:
        webrca["interval"] = env.webrca_interval
    server = _section(data, "server")
    if server is not None:
        for key in ("port", "log_level", "environment"):
            if getattr(env, key):
                server[key] = getattr(env, key)
    redis = _section(data, "storage", "redis")
    if redis is not None:
        if env.redis_host or env.redis_port:
            host, _, port = str(redis.get("address", "localhost:6379")).rpartition(":")
            redis["address"] = f"{env.redis_host or host or 'localhost'}:{env.redis_port or port}"
        if env.redis_password:
            redis["password"] = env.redis_password
    return data, origins


def file_secret_warnings(config: LoadedConfig) -> list[str]:
    """Secrets written in the configuration file, one sentence each (never the value)."""
    notes = []
    if config.settings.webrca.token and config.offline_token_from_file:
        notes.append("webrca.token in the configuration file is used because OFFLINE_TOKEN "
                     "is not set: secrets belong in the environment; move it to OFFLINE_TOKEN "
                     "(or OFFLINE_TOKEN_FILE, from a Secret)")
    elif config.settings.webrca.token:
        notes.append("webrca.token in the configuration file is ignored: OFFLINE_TOKEN "
                     "(or OFFLINE_TOKEN_FILE) is set; remove the token from the file")
    redis = config.settings.storage.redis
    if redis.password and not os.environ.get("REDIS_PASSWORD"):
        notes.append("storage.redis.password is written in the configuration file: move it "
                     "to the REDIS_PASSWORD environment variable (from a Secret)")
    return notes


def _check_number(name: str, value: str | None) -> None:
    if value is not None and value != "" and (not value.isdigit() or int(value) > 65535):
        raise ConfigError(f"environment variable {name}={value!r} is not a port number "
                          "(0 to 65535)")


def _describe(error: ErrorDetails, origins: Origins | None = None) -> str:
    """One problem, naming the file key, or the variable when the environment set it."""
    path = tuple(str(part) for part in error["loc"])
    location = ".".join(path) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{location}: unknown key (check its spelling)"
    message = str(error["msg"]).removeprefix("Value error, ")
    set_by = (origins or {}).get(path)
    if set_by:
        return _describe_variables(set_by, location, message)
    if message.startswith(f"{location}."):
        return message  # already names the exact key
    return f"{location}: {message}"


def _describe_variables(set_by: Mapping[str, str], location: str, message: str) -> str:
    """``environment variable LOG_LEVEL='loud' (overrides server.log_level): ...``."""
    shown = []
    for name, value in set_by.items():
        if name in SECRET_OVERRIDES:
            message = message.replace(value, "***")
            shown.append(name)
        else:
            shown.append(f"{name}={value!r}")
    noun = "variable" if len(shown) == 1 else "variables"
    return f"environment {noun} {', '.join(shown)} (overrides {location}): {message}"


GITHUB_RETRY_KEYS = ("initial_backoff", "max_backoff")
"""GitHub retry settings once read from ``delivery``; they now live under ``github``."""


def _migrate(data: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Carry old keys to their new place; say what changed, one sentence per key.

    ``delivery.initial_backoff`` and ``delivery.max_backoff`` used to pace the
    GitHub retries too. A file that sets them (and not the ``github`` ones)
    keeps its GitHub timing, with a deprecation notice.
    """
    document = dict(data)
    delivery, github = document.get("delivery"), document.get("github")
    if not isinstance(delivery, Mapping) or not isinstance(github, Mapping | None):
        return document, []
    github = dict(github or {})
    notes = []
    for key in GITHUB_RETRY_KEYS:
        if key in delivery and key not in github:
            github[key] = delivery[key]
            notes.append(f"GitHub retries still follow delivery.{key}: set github.{key} "
                         f"instead (delivery.{key} is for DevLake deliveries)")
    if notes:
        document["github"] = github
    return document, notes


def _validate(data: Mapping[str, Any], source: str,
              origins: Origins | None = None) -> tuple[Settings, list[str]]:
    try:
        return Settings.model_validate(dict(data)), _migrate(data)[1]
    except ValidationError as exc:
        problems = "; ".join(_describe(error, origins) for error in exc.errors())
        raise ConfigError(f"invalid configuration in {source}: {problems}") from None


def validate_settings(data: Mapping[str, Any], source: str) -> Settings:
    """Validate a parsed document; problems raise one :class:`ConfigError`."""
    return _validate(data, source)[0]


def load_config(path: str | os.PathLike[str] | None = None) -> LoadedConfig:
    """Read, override from the environment and validate.

    Raises :class:`ConfigError` with one clear message naming the key and the file.
    """
    source = str(path or os.environ.get(CONFIG_ENV_VAR) or default_config_path())
    data = read_document(source, ConfigError)
    env = EnvironmentOverrides()
    data, origins = _apply_overrides(data, env)
    settings, deprecations = _validate(data, source, origins)
    sentinel_password = _read_secret(env, "redis_sentinel_password")
    if sentinel_password is not None:
        redis = settings.storage.redis.model_copy(update={"sentinel_password": sentinel_password})
        settings = settings.model_copy(
            update={"storage": settings.storage.model_copy(update={"redis": redis})})
    default_key = _read_secret(env, "devlake_webhook_token")
    devlake_keys = {
        name: default_key if name == DEFAULT_TOKEN_ENV else _read_named_secret(name)
        for name in settings.integration.devlake.token_envs()
    } if settings.integration.devlake.enabled else {}
    offline_token = _read_secret(env, "offline_token")
    from_file = offline_token is None and bool(settings.webrca.token)
    if from_file:
        offline_token = SecretStr(settings.webrca.token)
    secrets = Secrets(
        github_token=_read_secret(env, "github_token"),
        devlake_webhook_token=default_key,
        devlake_keys=devlake_keys,
        offline_token=offline_token,
        redis_password=SecretStr(settings.storage.redis.password)
        if settings.storage.redis.password
        else None,
        redis_sentinel_password=sentinel_password,
        redis_url_passwords=tuple(
            SecretStr(value) for value in settings.storage.redis.url_passwords()),
    )
    return LoadedConfig(settings=settings, secrets=secrets, source=source,
                        deprecations=tuple(deprecations), offline_token_from_file=from_file)


def missing_devlake_keys(config: LoadedConfig) -> dict[str, list[str]]:
    """Variables that name no DevLake API key, each with the targets that need it.

    Empty when DevLake is disabled. The reference refuses to send without
    ``DEVLAKE_WEBHOOK_TOKEN``; ``run`` stops at start instead of filling the outbox.
    """
    devlake = config.settings.integration.devlake
    if not devlake.enabled:
        return {}
    users: dict[str, list[str]] = {devlake.token_env: ["integration.devlake"]}
    for index, team in enumerate(devlake.teams):
        users.setdefault(devlake.team_token_env(team), []).append(
            f"integration.devlake.teams[{index}] ({team.name})")
    return {name: targets for name, targets in users.items()
            if config.secrets.devlake_key(name) is None}


def default_config_path(cwd: Path | None = None) -> str:
    """The file read when neither ``--config`` nor ``DORAFORWARDER_CONFIG`` names one:
    ``configs/config.yaml`` in the working directory (where the reference reads it) when
    it exists, else ``config/config.yaml`` (this repository's layout)."""
    directory = cwd or Path.cwd()
    if (directory / REFERENCE_CONFIG_PATH).is_file():
        return REFERENCE_CONFIG_PATH
    return DEFAULT_CONFIG_PATH


def load_dotenv_file(cwd: Path | None = None) -> list[str]:
    """Set the variables of ``.env`` in the working directory that are not set already,
    as the reference does at start (godotenv); returns their names (never the values).

    A variable set in the environment, even to an empty string, always wins.
    """
    from dotenv import dotenv_values

    path = (cwd or Path.cwd()) / DOTENV_FILE
    if not path.is_file():
        return []
    try:
        values = dotenv_values(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    loaded = []
    for name, value in values.items():
        if name not in os.environ and value is not None:
            os.environ[name] = value
            loaded.append(name)
    return loaded
