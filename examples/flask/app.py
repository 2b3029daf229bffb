"""A Flask app that signs people in with MagicAuth magic links.

Run it with ``flask --app app run`` (see README.md); tests build it with
:func:`create_app`. The flow:

- ``GET /`` asks for an address; ``POST /send-link`` emails a link to
  ``APP_URL/auth/callback``.
- ``GET /auth/callback?magic_token=…`` shows a Continue button and does *not*
  verify, so that mail scanners opening the link cannot use it up;
  ``POST /auth/callback`` (the button) verifies and starts the app's session.
- ``GET /dashboard`` is for signed-in users; ``POST /logout`` signs out.
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Optional
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

import magicauth

__all__ = ["create_app", "describe_duration"]

log = logging.getLogger(__name__)

DEFAULT_APP_URL = "http://localhost:5000"
CALLBACK_PATH = "/auth/callback"
CSRF_FIELD = "csrf_token"
# The app's session lasts as long as the MagicAuth session JWT (its `exp`,
# kept in the session); this only bounds the cookie's own lifetime.
SESSION_COOKIE_LIFETIME = timedelta(days=1)

auth = Blueprint("auth", __name__)


def create_app(
    client: Optional[magicauth.Client] = None,
    *,
    app_url: Optional[str] = None,
    secret_key: Optional[str] = None,
) -> Flask:
    """The app. Arguments left out come from the environment: the client from
    ``MAGICAUTH_APP_KEY`` / ``MAGICAUTH_BASE_URL``, ``app_url`` from ``APP_URL``
    (default ``http://localhost:5000``), ``secret_key`` from ``FLASK_SECRET_KEY``
    (random, with a warning, when unset)."""
    app_url = _check_app_url(app_url or os.environ.get("APP_URL") or DEFAULT_APP_URL)
    secret_key = secret_key or os.environ.get("FLASK_SECRET_KEY")
    if not secret_key:
        log.warning(
            "FLASK_SECRET_KEY is not set: using a random key, so every restart signs everyone out "
            "and several workers would not accept each other's sessions"
        )
        secret_key = secrets.token_hex(32)

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secret_key,
        APP_URL=app_url,
        MAGICAUTH_CALLBACK_URL=app_url + CALLBACK_PATH,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=app_url.startswith("https://"),
        PERMANENT_SESSION_LIFETIME=SESSION_COOKIE_LIFETIME,
        MAX_CONTENT_LENGTH=16 * 1024,  # the forms hold an address or a token
    )
    # One client per process: it is thread-safe and keeps a connection pool.
    app.extensions["magicauth"] = client if client is not None else magicauth.Client()
    app.register_blueprint(auth)
    app.register_error_handler(HTTPException, _http_error)
    _keep_tokens_out_of_access_logs()
    return app


def _check_app_url(value: str) -> str:
    url = value.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"APP_URL must be an http(s) URL without query, e.g. {DEFAULT_APP_URL}; got {value!r}")
    if parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
        # Session cookies and magic tokens would travel in clear text.
        raise ValueError(f"APP_URL must use https (http is for localhost only); got {value!r}")
    return url


def _client() -> magicauth.Client:
    client = current_app.extensions["magicauth"]
    assert isinstance(client, magicauth.Client)
    return client


# --- Pages -------------------------------------------------------------------


def _page(template: str, status: int = 200, **context: Any) -> Response:
    return make_response(render_template(template, **context), status)


def _form_problem(status: int, email: str, message: str) -> Response:
    return _page("sign_in.html", status, email=email, problem=message, signed_in_as=None)


def _link_problem(status: int, title: str, explanation: str) -> Response:
    return _page("link_problem.html", status, title=title, explanation=explanation)


def _keep_token_private(response: Response) -> Response:
    """For pages whose URL or form carries a magic token: no ``Referer`` to
    other sites, and no copy in any browser or proxy cache."""
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


def _http_error(error: HTTPException) -> ResponseReturnValue:
    # Flask's own error pages, in the app's layout; never a traceback.
    status = error.code or 500
    return _page("problem.html", status, title=f"{status} {error.name}", message=error.description or "")


def describe_duration(seconds: float) -> str:
    """``"15 minutes"``, ``"30 seconds"``, ``"1 hour"`` (rounded up)."""
    secs = max(1, math.ceil(seconds))

    def plural(n: int, unit: str) -> str:
        return f"1 {unit}" if n == 1 else f"{n} {unit}s"

    if secs < 60:
        return plural(secs, "second")
    if secs < 3600:
        return plural(math.ceil(secs / 60), "minute")
    return plural(math.ceil(secs / 3600), "hour")


# --- CSRF: a random token bound to the session, required on every POST -------


def csrf_token() -> str:
    token = session.get(CSRF_FIELD)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[CSRF_FIELD] = token
    return token


@auth.app_context_processor
def _template_helpers() -> dict[str, Any]:
    return {"csrf_token": csrf_token}


@auth.before_app_request
def _check_csrf() -> Optional[ResponseReturnValue]:
    if request.method != "POST":
        return None
    expected = session.get(CSRF_FIELD)
    sent = request.form.get(CSRF_FIELD, "")
    if isinstance(expected, str) and secrets.compare_digest(expected.encode(), sent.encode()):
        return None
    # No session cookie (it expired, or cookies are off) or a form posted from
    # another site. For the callback this also stops "login CSRF": a hostile
    # page posting its own token to sign the visitor in to its account.
    response = _page(
        "problem.html",
        400,
        title="This form has expired",
        message="Please go back, reload the page and try again. If you came from a sign-in link, open it again.",
    )
    return _keep_token_private(response)


# --- Sessions -----------------------------------------------------------------


@dataclass(frozen=True)
class SignedInUser:
    id: int
    email: str
    expires_at: int
    """Unix seconds: the MagicAuth session JWT's ``exp``."""


def _signed_in_user() -> Optional[SignedInUser]:
    user_id, email, expires_at = session.get("user_id"), session.get("email"), session.get("expires_at")
    if not (isinstance(user_id, int) and isinstance(email, str) and isinstance(expires_at, int)):
        return None
    if expires_at <= time.time():
        return None
    return SignedInUser(id=user_id, email=email, expires_at=expires_at)


def _start_session(user: magicauth.User, claims: magicauth.SessionClaims) -> None:
    # Nothing from before sign-in (including the CSRF token) survives it.
    session.clear()
    session.permanent = True
    session["user_id"] = user.id
    session["email"] = user.email
    session["expires_at"] = claims.exp


# --- Routes --------------------------------------------------------------------


@auth.get("/")
def sign_in() -> ResponseReturnValue:
    user = _signed_in_user()
    return _page("sign_in.html", email="", problem=None, signed_in_as=user.email if user else None)


@auth.post("/send-link")
def send_link() -> ResponseReturnValue:
    email = request.form.get("email", "").strip()
    if not email:
        return _form_problem(400, email, "Please enter your email address.")
    # MagicAuth answers alike for known and unknown addresses (users are
    # created at their first sign-in), so this page reveals nobody's account.
    try:
        sent = _client().send_link(email, current_app.config["MAGICAUTH_CALLBACK_URL"])
    except magicauth.InvalidRequestError:
        # The callback URL is ours and fixed, so the address is what was refused.
        return _form_problem(
            400, email, "That does not look like an email address. Please check it and try again."
        )
    except magicauth.RateLimitError as error:
        wait = describe_duration(error.retry_after) if error.retry_after is not None else "a few minutes"
        response = _form_problem(
            429, email, f"Too many sign-in links were requested. Please try again in {wait}."
        )
        if error.retry_after is not None:
            response.headers["Retry-After"] = str(math.ceil(error.retry_after))
        return response
    except magicauth.MagicAuthError as error:
        # A wrong key or base URL, a disallowed redirect URL, MagicAuth being
        # down: the operator's problem, logged for them (never the app key).
        current_app.logger.error("send_link failed: %s", error)
        return _form_problem(
            503, email, "We could not send a sign-in link just now. Please try again in a moment."
        )
    return _page("check_email.html", email=email, lifetime=describe_duration(sent.expires_in))


@auth.get(CALLBACK_PATH)
def confirm_sign_in() -> ResponseReturnValue:
    """Shows a Continue button; verifies nothing. Mail security scanners
    (Outlook Safe Links, Mimecast, …) fetch the links in messages; verifying
    here would let them use up the single-use token before the person clicks."""
    token = magicauth.token_from_url(request.query_string.decode("utf-8", "replace"))
    if token is None:
        return _keep_token_private(_incomplete_link())
    return _keep_token_private(_page("continue.html", token=token))


@auth.post(CALLBACK_PATH)
def complete_sign_in() -> ResponseReturnValue:
    """The person pressed Continue: verify the token, start the session."""
    token = request.form.get("magic_token", "").strip()
    if not token:
        return _keep_token_private(_incomplete_link())
    client = _client()
    try:
        verification = client.verify_token(token)
    except magicauth.TokenExpiredError:
        return _keep_token_private(
            _link_problem(
                410,
                "This link has expired",
                "Sign-in links work for a short time only, and this one is too old.",
            )
        )
    except magicauth.TokenAlreadyUsedError:
        return _keep_token_private(
            _link_problem(
                410,
                "This link has already been used",
                "Each sign-in link works once. If you already signed in with it, you may still be signed in.",
            )
        )
    except magicauth.InvalidTokenError:
        return _keep_token_private(
            _link_problem(
                400,
                "This link is not valid",
                "The link may have been cut short when it was copied. Links also only work for the site that sent them.",
            )
        )
    except magicauth.MagicAuthError as error:
        current_app.logger.error("verify_token failed: %s", error)
        return _keep_token_private(_sign_in_unavailable())
    # verify_token is the proof. The session JWT, checked offline against
    # MagicAuth's public keys, says how long the app's session may last.
    try:
        claims = client.verify_session(verification.token)
    except magicauth.MagicAuthError as error:
        current_app.logger.error("verify_session failed: %s", error)
        return _keep_token_private(_sign_in_unavailable())
    if claims.user_id != verification.user.id:
        current_app.logger.error("the session JWT names user %s, not %s", claims.sub, verification.user.id)
        return _keep_token_private(_sign_in_unavailable())
    _start_session(verification.user, claims)
    current_app.logger.info("user %s signed in", verification.user.id)
    return _keep_token_private(redirect(url_for("auth.dashboard"), 303))


def _incomplete_link() -> Response:
    return _link_problem(
        400,
        "This link is incomplete",
        "The sign-in link has no token. It may have been cut short when it was copied.",
    )


def _sign_in_unavailable() -> Response:
    return _link_problem(
        503,
        "We could not sign you in",
        "Something went wrong on our side. If your link no longer works, ask for a new one below.",
    )


@auth.get("/dashboard")
def dashboard() -> ResponseReturnValue:
    user = _signed_in_user()
    if user is None:
        if "user_id" in session:
            session.clear()
            flash("Your session has ended. Please sign in again.", "problem")
        else:
            flash("Please sign in to see that page.", "info")
        return redirect(url_for("auth.sign_in"), 303)
    until = datetime.fromtimestamp(user.expires_at, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    response = _page("dashboard.html", user=user, until=until)
    response.headers["Cache-Control"] = "no-store"
    return response


@auth.post("/logout")
def logout() -> ResponseReturnValue:
    # The session is a signed cookie: clearing it signs this browser out. A
    # copy taken earlier stays valid until it expires (see README.md).
    session.clear()
    flash("You have signed out.", "info")
    return redirect(url_for("auth.sign_in"), 303)


# --- Logs ----------------------------------------------------------------------

_MAGIC_TOKEN_IN_URL = re.compile(r"(magic_token=)[^&\s\"]+")


class _RedactMagicTokens(logging.Filter):
    """The development server logs each request line, query string included:
    keep the magic tokens of ``GET /auth/callback?magic_token=…`` out of it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _MAGIC_TOKEN_IN_URL.sub(r"\1[redacted]", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        if isinstance(record.msg, str):
            record.msg = _MAGIC_TOKEN_IN_URL.sub(r"\1[redacted]", record.msg)
        return True


def _keep_tokens_out_of_access_logs() -> None:
    access_log = logging.getLogger("werkzeug")
    if not any(isinstance(f, _RedactMagicTokens) for f in access_log.filters):
        access_log.addFilter(_RedactMagicTokens())
