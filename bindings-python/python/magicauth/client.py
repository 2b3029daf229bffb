"""The synchronous and asyncio clients."""

from __future__ import annotations

from typing import Optional

from . import _native
from .models import SendLinkResponse, SessionClaims, Verification

__all__ = ["Client", "AsyncClient", "token_from_url"]


def token_from_url(url_or_query: str) -> Optional[str]:
    """The ``magic_token`` of a callback URL or query string, or ``None``."""
    return _native.token_from_url(url_or_query)


class _Base:
    __slots__ = ("_native",)

    def __init__(
        self,
        app_key: Optional[str] = None,
        *,
        base_url: Optional[str] = None,
        timeout: Optional[float] = None,
        max_retries: Optional[int] = None,
    ) -> None:
        self._native = _native.NativeClient(
            app_key, base_url=base_url, timeout=timeout, max_retries=max_retries
        )

    @property
    def base_url(self) -> str:
        """The API base URL in use."""
        return self._native.base_url

    @staticmethod
    def token_from_url(url_or_query: str) -> Optional[str]:
        """The ``magic_token`` of a callback URL or query string, or ``None``."""
        return _native.token_from_url(url_or_query)

    def __repr__(self) -> str:
        # Never the app key.
        return f"{type(self).__name__}(base_url={self.base_url!r})"


class Client(_Base):
    """MagicAuth client. Thread-safe: share one per process.

    Arguments left out are read from ``MAGICAUTH_APP_KEY`` and
    ``MAGICAUTH_BASE_URL`` (default ``https://magicauth.app/api``). ``timeout``
    is per attempt, in seconds (default 10); ``max_retries`` defaults to 2.
    Calls release the GIL while they wait on the network.
    """

    __slots__ = ()

    def send_link(self, email: str, redirect_url: Optional[str] = None) -> SendLinkResponse:
        """Email a sign-in link to ``email`` leading to ``redirect_url`` (one of
        the app's allowed URLs; its first one when omitted)."""
        return SendLinkResponse._from_native(self._native.send_link(email, redirect_url))

    def verify_token(self, token: str) -> Verification:
        """Exchange a link's token for the user and a session JWT. Single-use:
        a second call raises :class:`~magicauth.TokenAlreadyUsedError`."""
        return Verification._from_native(self._native.verify_token(token))

    def verify_session(self, jwt: str) -> SessionClaims:
        """Check a session JWT offline against the server's cached public keys
        (signature, issuer, audience, lifetime); returns its claims."""
        return SessionClaims._from_native(self._native.verify_session(jwt))


class AsyncClient(_Base):
    """The asyncio twin of :class:`Client`: the same methods, as coroutines.

    The network work runs on the native runtime; the event loop is never blocked.
    """

    __slots__ = ()

    async def send_link(self, email: str, redirect_url: Optional[str] = None) -> SendLinkResponse:
        return SendLinkResponse._from_native(await self._native.send_link_async(email, redirect_url))

    async def verify_token(self, token: str) -> Verification:
        return Verification._from_native(await self._native.verify_token_async(token))

    async def verify_session(self, jwt: str) -> SessionClaims:
        return SessionClaims._from_native(await self._native.verify_session_async(jwt))
