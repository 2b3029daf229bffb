"""The exceptions raised by the MagicAuth client.

Every error is a :class:`MagicAuthError` carrying the API's ``code`` (for
example ``"token_used"``), the HTTP ``status`` when the server answered, and
``retry_after`` (seconds) for rate limits. Catch the subclass you care about::

    try:
        verification = client.verify_token(token)
    except (TokenExpiredError, TokenAlreadyUsedError):
        ...  # offer a new link
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "MagicAuthError",
    "InvalidTokenError",
    "TokenAlreadyUsedError",
    "TokenExpiredError",
    "AuthenticationError",
    "PermissionDeniedError",
    "RateLimitError",
    "InvalidRequestError",
    "ServerError",
    "APIConnectionError",
    "APITimeoutError",
    "InvalidSessionError",
    "ConfigurationError",
]


class MagicAuthError(Exception):
    """Base class of every MagicAuth error."""

    code: str
    """Stable machine code: the API's (``"token_used"``), or ``"server_error"``,
    ``"connection"``, ``"timeout"``, ``"invalid_session"``, ``"configuration"``."""
    message: str
    """Human-readable message (the API's ``error`` text when it sent one)."""
    status: Optional[int]
    """HTTP status, when the server answered."""
    retry_after: Optional[float]
    """Seconds the server asked to wait (rate limits)."""
    raw_body: Optional[str]
    """The response body, when it was not the API's error JSON."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        status: Optional[int] = None,
        retry_after: Optional[float] = None,
        raw_body: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.retry_after = retry_after
        self.raw_body = raw_body

    def __str__(self) -> str:
        if self.status is None:
            return f"{self.message} ({self.code})"
        return f"{self.message} ({self.code}, HTTP {self.status})"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, code={self.code!r}, "
            f"status={self.status!r}, retry_after={self.retry_after!r})"
        )


class InvalidTokenError(MagicAuthError):
    """``invalid_token``: the token is unknown, malformed, or for another app."""


class TokenAlreadyUsedError(MagicAuthError):
    """``token_used``: the link was used before."""


class TokenExpiredError(MagicAuthError):
    """``token_expired``: the link is older than its app's lifetime."""


class AuthenticationError(MagicAuthError):
    """``invalid_app_key``: the app key is unknown or was rotated away."""


class PermissionDeniedError(MagicAuthError):
    """``app_disabled`` or ``redirect_not_allowed``."""


class RateLimitError(MagicAuthError):
    """``rate_limited`` or ``quota_exceeded``; see :attr:`retry_after`."""


class InvalidRequestError(MagicAuthError):
    """``invalid_request`` or ``payload_too_large``: bad input."""


class ServerError(MagicAuthError):
    """``internal_error`` or another server failure (``server_error``)."""


class APIConnectionError(MagicAuthError):
    """The server could not be reached (``connection``)."""


class APITimeoutError(MagicAuthError):
    """No answer within the timeout (``timeout``)."""


class InvalidSessionError(MagicAuthError):
    """A session JWT failed :meth:`Client.verify_session` (``invalid_session``)."""


class ConfigurationError(MagicAuthError, ValueError):
    """The client is misconfigured, e.g. no app key (``configuration``)."""
