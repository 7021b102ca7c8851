"""HTTP edge of the WebRCA source: the SSO token exchange and incident pages.

The offline token (``OFFLINE_TOKEN``) is exchanged at Red Hat SSO for a
short-lived access token, which is cached until shortly before it expires.
WebRCA answers 401 once that token has expired; the client then exchanges
again and retries the request once.

Errors are sorted by what the caller should do about them:
:class:`TransientError` (retry soon), :class:`ConfigurationError` (an
operator has to act; /readyz says so). No error message ever carries a
token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
from pydantic import SecretStr

from doraforwarder import bodies, http_backend
from doraforwarder.backoff import parse_retry_after
from doraforwarder.config import LoadedConfig
from doraforwarder.webrca.pages import PageRead, read_page


class WebRCAError(Exception):
    """Base of the errors of this module; ``outcome`` labels the poll metric."""

    outcome = "error"


class TransientError(WebRCAError):
    """Network trouble, 5xx or 429: worth retrying."""

    outcome = "unavailable"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConfigurationError(WebRCAError):
    """Retrying cannot help until an operator fixes the token or the URLs."""

    outcome = "configuration_error"


class OfflineTokenMissing(ConfigurationError):
    def __init__(self) -> None:
        super().__init__("OFFLINE_TOKEN is not set; WebRCA cannot be polled")


class TokenRejected(ConfigurationError):
    """SSO refused the offline token (``invalid_grant``) or the client id."""

    def __init__(self, message: str, error: str) -> None:
        super().__init__(message)
        self.error = error
        """SSO's error code (``invalid_grant``), or ``HTTP <status>`` without one."""


class AccessDenied(ConfigurationError):
    """WebRCA refused a freshly exchanged access token, or the URL is wrong."""


def _sso_error(response: httpx.Response) -> str:
    """Keycloak's error code (``invalid_grant``), without its free-text description."""
    try:
        document = response.json()
    except (ValueError, RecursionError):
        return f"HTTP {response.status_code}"
    error = document.get("error") if isinstance(document, dict) else None
    return str(error) if error else f"HTTP {response.status_code}"


def webrca_http(config: LoadedConfig,
                transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The HTTP client for SSO and WebRCA (proxies and TLS from the environment)."""
    return http_backend.async_client(timeout=config.settings.webrca.timeout_seconds,
                                     transport=transport,
                                     headers={"User-Agent": "doraforwarder"})


class TokenSource:
    """Access tokens from the offline token, cached until ``margin_s`` seconds before expiry.

    ``margin_s`` shrinks to half the lifetime for very short-lived tokens, so a
    token is always used at least once.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        token_url: str,
        client_id: str,
        offline_token: SecretStr | None,
        *,
        margin_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._token_url, self._client_id = token_url, client_id
        self._offline_token = offline_token
        self._margin_s, self._clock = margin_s, clock
        self._access_token: str | None = None
        self._valid_until = 0.0
        self._lock = asyncio.Lock()
        self.exchanges = 0
        """Successful exchanges so far (for tests and the status board)."""

    @classmethod
    def for_config(cls, http: httpx.AsyncClient, config: LoadedConfig) -> TokenSource:
        """The token source the configuration describes (the poller and ``doctor`` use it)."""
        webrca = config.settings.webrca
        return cls(http, webrca.token_url, webrca.client_id, config.secrets.offline_token)

    def invalidate(self) -> None:
        self._access_token = None

    async def get(self, *, fresh: bool = False) -> str:
        """A valid access token; ``fresh`` forces a new exchange (after a 401)."""
        async with self._lock:
            if not fresh and self._access_token and self._clock() < self._valid_until:
                return self._access_token
            return await self._exchange()

    async def _exchange(self) -> str:
        if self._offline_token is None or not self._offline_token.get_secret_value():
            raise OfflineTokenMissing()
        form = {
            "grant_type": "refresh_token",
            "client_id": self._client_id,
            "refresh_token": self._offline_token.get_secret_value(),
        }
        try:
            response = await bodies.fetch(self._http, "POST", self._token_url,
                                          limit=bodies.TOKEN_LIMIT, data=form)
        except httpx.HTTPError as exc:
            raise TransientError(f"SSO token endpoint unreachable: {type(exc).__name__}") from None
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientError(f"SSO token endpoint answered {response.status_code}",
                                 parse_retry_after(response.headers.get("Retry-After")))
        if response.status_code != 200:
            error = _sso_error(response)
            if error == "invalid_grant":
                raise TokenRejected("offline token rejected (invalid_grant)", error)
            raise TokenRejected(f"SSO refused the token exchange ({error})", error)
        try:
            document = bodies.whole(response, "SSO answer", bodies.TOKEN_LIMIT).json()
            token = document["access_token"]
            expires_in = float(document.get("expires_in") or 300)
        except bodies.TooLarge as exc:
            raise TransientError(str(exc)) from None
        except (ValueError, KeyError, TypeError, RecursionError):
            raise TransientError("SSO answer has no usable access_token") from None
        if not isinstance(token, str) or not token:
            raise TransientError("SSO answer has an empty access_token")
        margin = min(self._margin_s, expires_in / 2)
        self._access_token = token
        self._valid_until = self._clock() + expires_in - margin
        self.exchanges += 1
        return token


class IncidentsClient:
    """Pages of the WebRCA incidents endpoint."""

    def __init__(self, http: httpx.AsyncClient, api_url: str, tokens: TokenSource) -> None:
        self._http = http
        self._api_url = api_url
        self.tokens = tokens

    async def _get(self, number: int, size: int, token: str) -> httpx.Response:
        try:
            return await bodies.fetch(
                self._http, "GET", self._api_url, limit=bodies.DOCUMENT_LIMIT,
                params={"page": number, "size": size},
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise TransientError(
                f"WebRCA unreachable on page {number}: {type(exc).__name__}"
            ) from None

    async def fetch_page(self, number: int, size: int) -> PageRead:
        """Page ``number`` (1-based); a 401 gets one retry with a new access token."""
        response = await self._get(number, size, await self.tokens.get())
        if response.status_code == 401:
            self.tokens.invalidate()
            response = await self._get(number, size, await self.tokens.get(fresh=True))
            if response.status_code == 401:
                raise AccessDenied("WebRCA rejected a freshly exchanged access token (401)")
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientError(f"WebRCA answered {response.status_code} on page {number}",
                                 parse_retry_after(response.headers.get("Retry-After")))
        if response.status_code == 403:
            raise AccessDenied("WebRCA answered 403: the offline token's account may not "
                               "read incidents")
        if response.status_code != 200:
            raise AccessDenied(f"WebRCA answered {response.status_code} on page {number}: "
                               "check webrca.api_url")
        try:
            bodies.whole(response, f"WebRCA page {number}", bodies.DOCUMENT_LIMIT)
        except bodies.TooLarge as exc:
            return PageRead(number, problem="too_large", detail=str(exc))
        return read_page(response.text, number)
