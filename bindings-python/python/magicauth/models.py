"""Typed results of the MagicAuth client."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping, Optional

__all__ = ["SendLinkResponse", "User", "Verification", "SessionClaims"]


@dataclass(frozen=True)
class SendLinkResponse:
    """Result of ``send_link``."""

    expires_in: int
    """Seconds until the emailed link expires."""

    @classmethod
    def _from_native(cls, raw: Mapping[str, Any]) -> SendLinkResponse:
        return cls(expires_in=int(raw["expires_in"]))


@dataclass(frozen=True)
class User:
    """A user of your app."""

    id: int
    email: str
    name: Optional[str]
    email_verified_at: datetime
    """First successful sign-in (UTC); never changes."""
    last_login_at: datetime
    """This sign-in (UTC)."""

    @classmethod
    def _from_native(cls, raw: Mapping[str, Any]) -> User:
        return cls(
            id=int(raw["id"]),
            email=str(raw["email"]),
            name=raw["name"],
            email_verified_at=raw["email_verified_at"],
            last_login_at=raw["last_login_at"],
        )


@dataclass(frozen=True)
class Verification:
    """Result of ``verify_token``: the signed-in user and a session JWT."""

    user: User
    token: str
    """Session JWT (EdDSA); check it later with ``verify_session``."""
    redirect_url: str
    """The URL the link was sent to."""

    def __repr__(self) -> str:
        # The session token is a credential: keep it out of logs.
        return f"Verification(user={self.user!r}, token='***', redirect_url={self.redirect_url!r})"

    @classmethod
    def _from_native(cls, raw: Mapping[str, Any]) -> Verification:
        return cls(
            user=User._from_native(raw["user"]),
            token=str(raw["token"]),
            redirect_url=str(raw["redirect_url"]),
        )


@dataclass(frozen=True)
class SessionClaims:
    """The checked claims of a session JWT."""

    sub: str
    """The user id, as a string."""
    email: str
    aud: str
    """Your app's id."""
    iss: str
    """The server's public URL."""
    iat: int
    """Issued at (Unix seconds)."""
    exp: int
    """Expires at (Unix seconds)."""
    jti: str

    @property
    def user_id(self) -> int:
        return int(self.sub)

    @classmethod
    def _from_native(cls, raw: Mapping[str, Any]) -> SessionClaims:
        return cls(
            sub=str(raw["sub"]),
            email=str(raw["email"]),
            aud=str(raw["aud"]),
            iss=str(raw["iss"]),
            iat=int(raw["iat"]),
            exp=int(raw["exp"]),
            jti=str(raw["jti"]),
        )
