"""MagicAuth: passwordless sign-in with email magic links.

A native (Rust) client with typed results and exceptions::

    from magicauth import Client, TokenExpiredError

    client = Client()  # MAGICAUTH_APP_KEY, MAGICAUTH_BASE_URL
    client.send_link("user@example.com", "https://yourapp.com/auth/callback")
    verification = client.verify_token(token)
"""

from ._native import __version__
from .client import AsyncClient, Client, token_from_url
from .errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    InvalidSessionError,
    InvalidTokenError,
    MagicAuthError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    TokenAlreadyUsedError,
    TokenExpiredError,
)
from .models import SendLinkResponse, SessionClaims, User, Verification

__all__ = [
    "__version__",
    "Client",
    "AsyncClient",
    "token_from_url",
    "SendLinkResponse",
    "SessionClaims",
    "User",
    "Verification",
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
