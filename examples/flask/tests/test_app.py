"""The example against the real MagicAuth server, through Flask's test client:
every page of the sign-in flow, the scanner-safe callback, the failures a
person can meet, and the app's configuration."""

from __future__ import annotations

import logging
import re
import socket
from urllib.parse import urlsplit

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

import magicauth
from app import create_app, describe_duration
from real_server import APP_URL, RealServer

CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')
TOKEN_INPUT = re.compile(r'name="magic_token" value="([^"]+)"')


def text(response: TestResponse) -> str:
    return response.get_data(as_text=True)


def hidden(pattern: re.Pattern[str], response: TestResponse) -> str:
    found = pattern.search(text(response))
    assert found, text(response)
    return found.group(1)


def assert_no_traceback(response: TestResponse) -> None:
    body = text(response)
    assert "Traceback" not in body and "magicauth." not in body and "Error(" not in body, body


def request_link(browser: FlaskClient, email: str) -> TestResponse:
    """What a person does on ``/``: open the form, submit an address."""
    csrf = hidden(CSRF_INPUT, browser.get("/"))
    return browser.post("/send-link", data={"email": email, "csrf_token": csrf})


def emailed_callback(server: RealServer, email: str, count: int = 1) -> str:
    """The path and query of the link in the newest email to ``email``."""
    link = urlsplit(server.mail(email, count)["link"])
    assert f"{link.scheme}://{link.netloc}" == APP_URL and link.path == "/auth/callback"
    return f"{link.path}?{link.query}"


def press_continue(browser: FlaskClient, callback: str) -> TestResponse:
    """Open the emailed link and press Continue."""
    page = browser.get(callback)
    return browser.post(
        "/auth/callback",
        data={"magic_token": hidden(TOKEN_INPUT, page), "csrf_token": hidden(CSRF_INPUT, page)},
    )


def sign_in(browser: FlaskClient, server: RealServer, email: str) -> None:
    assert request_link(browser, email).status_code == 200
    assert press_continue(browser, emailed_callback(server, email)).status_code == 303


def test_sign_in_form(browser: FlaskClient) -> None:
    response = browser.get("/")
    assert response.status_code == 200
    body = text(response)
    assert '<form method="post" action="/send-link">' in body
    assert 'type="email" name="email"' in body
    assert len(hidden(CSRF_INPUT, response)) >= 32


def test_the_whole_flow_with_a_scanner_safe_callback(browser: FlaskClient, testbed: RealServer) -> None:
    response = request_link(browser, "flask.user@example.com")
    assert response.status_code == 200
    assert "Check your email" in text(response) and "15 minutes" in text(response)

    callback = emailed_callback(testbed, "flask.user@example.com")
    token = callback.split("magic_token=", 1)[1]
    # Opening the link (a person, or a mail scanner, twice) verifies nothing.
    for _ in range(2):
        page = browser.get(callback)
        assert page.status_code == 200
        assert page.headers["Referrer-Policy"] == "no-referrer"
        assert page.headers["Cache-Control"] == "no-store"
        assert ">Continue</button>" in text(page)
        assert '<form method="post" action="/auth/callback">' in text(page)
        assert hidden(TOKEN_INPUT, page) == token

    signed_in = browser.post(
        "/auth/callback", data={"magic_token": token, "csrf_token": hidden(CSRF_INPUT, page)}
    )
    assert signed_in.status_code == 303 and signed_in.location == "/dashboard"
    assert signed_in.headers["Referrer-Policy"] == "no-referrer"
    cookie = signed_in.headers["Set-Cookie"]
    assert cookie.startswith("session=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Expires=" in cookie  # session.permanent
    assert "Secure" not in cookie  # APP_URL is http://localhost

    dashboard = browser.get("/dashboard")
    assert dashboard.status_code == 200
    assert "flask.user@example.com" in text(dashboard)
    assert dashboard.headers["Cache-Control"] == "no-store"
    assert "You are signed in as <strong>flask.user@example.com</strong>" in text(browser.get("/"))

    # The same link again (from another tab, say): used up, and said so.
    page = browser.get(callback)
    again = browser.post("/auth/callback", data={"magic_token": token, "csrf_token": hidden(CSRF_INPUT, page)})
    assert again.status_code == 410
    assert "This link has already been used" in text(again)
    assert "Send me a new link" in text(again)
    assert_no_traceback(again)


def test_expired_link(own_testbed: RealServer, short_link_browser: FlaskClient) -> None:
    assert request_link(short_link_browser, "late@example.com").status_code == 200
    callback = emailed_callback(own_testbed, "late@example.com")
    own_testbed.advance_clock(121)
    response = press_continue(short_link_browser, callback)
    assert response.status_code == 410
    assert "This link has expired" in text(response) and "Send me a new link" in text(response)
    assert_no_traceback(response)


def test_invalid_token(browser: FlaskClient) -> None:
    response = press_continue(browser, "/auth/callback?magic_token=not-a-real-token")
    assert response.status_code == 400
    assert "This link is not valid" in text(response)
    assert_no_traceback(response)


def test_link_without_token(browser: FlaskClient) -> None:
    response = browser.get("/auth/callback")
    assert response.status_code == 400 and "This link is incomplete" in text(response)
    assert response.headers["Cache-Control"] == "no-store"


def test_continue_without_the_csrf_token_is_refused_and_keeps_the_link(
    browser: FlaskClient, testbed: RealServer
) -> None:
    assert request_link(browser, "csrf@example.com").status_code == 200
    callback = emailed_callback(testbed, "csrf@example.com")
    token = hidden(TOKEN_INPUT, browser.get(callback))
    # A form posted from another site carries no (or a wrong) CSRF token.
    for csrf in (None, "forged"):
        data = {"magic_token": token} if csrf is None else {"magic_token": token, "csrf_token": csrf}
        refused = browser.post("/auth/callback", data=data)
        assert refused.status_code == 400 and "This form has expired" in text(refused)
    assert press_continue(browser, callback).status_code == 303


def test_invalid_email_is_explained_and_escaped(browser: FlaskClient) -> None:
    response = request_link(browser, 'not-an-email"><script>alert(1)</script>')
    assert response.status_code == 400
    assert "That does not look like an email address" in text(response)
    assert "<script>" not in text(response) and "&lt;script&gt;" in text(response)

    empty = request_link(browser, "   ")
    assert empty.status_code == 400 and "Please enter your email address" in text(empty)


def test_the_sixth_link_to_one_address_is_rate_limited(browser: FlaskClient) -> None:
    for _ in range(5):
        assert request_link(browser, "eager@example.com").status_code == 200
    limited = request_link(browser, "eager@example.com")
    assert limited.status_code == 429
    message = re.search(r"Too many sign-in links were requested\. Please try again in (\d+) (\w+)\.", text(limited))
    assert message, text(limited)
    assert message.group(2) in ("minute", "minutes", "second", "seconds")
    assert 0 < int(limited.headers["Retry-After"]) <= 15 * 60
    assert 'value="eager@example.com"' in text(limited)  # the form keeps the address


def test_other_failures_get_a_plain_try_again(browser: FlaskClient) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = magicauth.Client("mk_unused", base_url=f"http://127.0.0.1:{port}/api", max_retries=0)
    offline = create_app(client, app_url=APP_URL, secret_key="test")
    response = request_link(offline.test_client(), "someone@example.com")
    assert response.status_code == 503
    assert "We could not send a sign-in link just now. Please try again in a moment." in text(response)
    assert_no_traceback(response)


def test_dashboard_needs_a_session(browser: FlaskClient) -> None:
    response = browser.get("/dashboard")
    assert response.status_code == 303 and response.location == "/"
    assert "Please sign in to see that page." in text(browser.get("/"))


def test_logout(browser: FlaskClient, testbed: RealServer) -> None:
    sign_in(browser, testbed, "leaving@example.com")
    dashboard = browser.get("/dashboard")
    assert dashboard.status_code == 200

    assert browser.post("/logout").status_code == 400  # no CSRF token
    response = browser.post("/logout", data={"csrf_token": hidden(CSRF_INPUT, dashboard)})
    assert response.status_code == 303 and response.location == "/"
    assert "You have signed out." in text(browser.get("/"))
    assert browser.get("/dashboard").status_code == 303


def test_configuration_from_the_environment(
    testbed: RealServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    created = testbed.create_app("--redirect-url", "http://127.0.0.1:8000/auth/callback")
    monkeypatch.setenv("MAGICAUTH_APP_KEY", created["app_key"])
    monkeypatch.setenv("MAGICAUTH_BASE_URL", testbed.base_url)
    monkeypatch.setenv("APP_URL", "http://127.0.0.1:8000/")
    monkeypatch.delenv("FLASK_SECRET_KEY", raising=False)
    with caplog.at_level(logging.WARNING):
        app = create_app()
    assert "FLASK_SECRET_KEY is not set" in caplog.text
    assert app.config["MAGICAUTH_CALLBACK_URL"] == "http://127.0.0.1:8000/auth/callback"
    assert app.config["SESSION_COOKIE_SECURE"] is False
    assert request_link(app.test_client(), "from.env@example.com").status_code == 200
    assert testbed.mail("from.env@example.com")["link"].startswith("http://127.0.0.1:8000/auth/callback?magic_token=")


def test_app_url_rules() -> None:
    client = magicauth.Client("mk_unused", base_url="http://127.0.0.1:9/api")
    secure = create_app(client, app_url="https://app.example.com", secret_key="test")
    assert secure.config["SESSION_COOKIE_SECURE"] is True
    for bad in ("http://app.example.com", "ftp://localhost", "app.example.com", "https://app.example.com/?x=1"):
        with pytest.raises(ValueError):
            create_app(client, app_url=bad, secret_key="test")


def test_tokens_stay_out_of_the_access_log(browser: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    # The development server logs each request line through the "werkzeug" logger.
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        logging.getLogger("werkzeug").info(
            '%s - - "%s" %s %s', "127.0.0.1", "GET /auth/callback?magic_token=s3cret&x=1 HTTP/1.1", "200", "-"
        )
    assert "s3cret" not in caplog.text and "magic_token=[redacted]&x=1" in caplog.text


def test_durations_read_naturally() -> None:
    assert describe_duration(900) == "15 minutes"
    assert describe_duration(61) == "2 minutes"
    assert describe_duration(60) == "1 minute"
    assert describe_duration(0.2) == "1 second"
    assert describe_duration(7200) == "2 hours"
