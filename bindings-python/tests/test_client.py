"""The Python SDK against the real server, and its Python-side guarantees:
exceptions, threads, asyncio, fork, configuration, secrecy."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest

import magicauth
from magicauth import _native
from testbed import Testbed


def sign_in(testbed: Testbed, client: magicauth.Client, email: str) -> magicauth.Verification:
    client.send_link(email)
    token = testbed.mail(email)["token"]
    return client.verify_token(token)


def test_round_trip_with_typed_results(testbed: Testbed, client: magicauth.Client, app: Dict[str, str]) -> None:
    sent = client.send_link("Py.User@Example.com", "https://app.example.com/auth/callback?from=py")
    assert sent == magicauth.SendLinkResponse(expires_in=900)
    mail = testbed.mail("py.user@example.com")
    assert mail["subject"] == "Your sign-in link for Python SDK"
    token = magicauth.token_from_url(mail["link"])
    assert token == mail["token"]

    verification = client.verify_token(token)
    user = verification.user
    assert isinstance(user, magicauth.User)
    assert user.email == "py.user@example.com" and user.name is None and user.id > 0
    assert isinstance(user.email_verified_at, datetime) and user.email_verified_at.tzinfo is not None
    assert user.email_verified_at.utcoffset() == timezone.utc.utcoffset(None)
    assert abs((datetime.now(timezone.utc) - user.last_login_at).total_seconds()) < 60
    assert verification.redirect_url == "https://app.example.com/auth/callback?from=py"

    claims = client.verify_session(verification.token)
    assert claims.aud == app["app_id"] and claims.user_id == user.id and claims.iss == testbed.server_url
    assert claims.exp - claims.iat == 24 * 3600

    with pytest.raises(magicauth.TokenAlreadyUsedError) as info:
        client.verify_token(token)
    error = info.value
    assert (error.code, error.status, error.message) == ("token_used", 400, "Token already used")
    assert isinstance(error, magicauth.MagicAuthError)
    assert isinstance(error.__cause__, _native.NativeError)


def test_errors_from_the_real_server(testbed: Testbed, client: magicauth.Client, app: Dict[str, str]) -> None:
    with pytest.raises(magicauth.InvalidTokenError) as invalid:
        client.verify_token("nope")
    assert invalid.value.code == "invalid_token"
    with pytest.raises(magicauth.InvalidRequestError):
        client.send_link("not-an-email")
    with pytest.raises(magicauth.PermissionDeniedError) as forbidden:
        client.send_link("a@example.com", "https://evil.example.com/")
    assert forbidden.value.code == "redirect_not_allowed" and forbidden.value.status == 403
    with pytest.raises(magicauth.AuthenticationError):
        magicauth.Client("mk_wrongwrongwrongwrongwrongwrongwrong000000", base_url=testbed.base_url).send_link("a@example.com")
    with pytest.raises(magicauth.InvalidSessionError):
        client.verify_session("a.b.c")
    testbed.cli("disable", app["app_id"])
    with pytest.raises(magicauth.PermissionDeniedError) as disabled:
        client.send_link("a@example.com")
    assert disabled.value.code == "app_disabled"


def test_expired_and_rate_limited(own_testbed: Testbed) -> None:
    testbed = own_testbed
    created = testbed.create_app("--plan", "custom", "--burst", "1", "--token-ttl", "2m")
    client = magicauth.Client(created["app_key"], base_url=testbed.base_url)
    client.send_link("expiring@example.com")
    token = testbed.mail("expiring@example.com")["token"]
    with pytest.raises(magicauth.RateLimitError) as limited:
        client.send_link("second@example.com")
    assert limited.value.code == "rate_limited" and limited.value.status == 429
    assert limited.value.retry_after is not None and 0 < limited.value.retry_after <= 60
    testbed.advance_clock(121)
    with pytest.raises(magicauth.TokenExpiredError):
        client.verify_token(token)


class Canned(BaseHTTPRequestHandler):
    """A stub API answering every request with the response queued for its test."""

    responses: List[Tuple[int, Dict[str, str], bytes]] = []
    seen: List[Dict[str, str]] = []
    delay = 0.0

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("content-length", 0))
        self.rfile.read(length)
        type(self).seen.append({k.lower(): v for k, v in self.headers.items()})
        if self.delay:
            time.sleep(self.delay)
        status, headers, body = type(self).responses.pop(0) if len(type(self).responses) > 1 else type(self).responses[0]
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[Tuple[str, Callable[..., None]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Canned)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def answer(*responses: Tuple[int, Dict[str, str], bytes], delay: float = 0.0) -> None:
        Canned.responses = list(responses)
        Canned.seen = []
        Canned.delay = delay

    yield f"http://127.0.0.1:{server.server_address[1]}/api", answer
    server.shutdown()


def api_error(status: int, code: str, message: str = "m") -> Tuple[int, Dict[str, str], bytes]:
    body = json.dumps({"success": False, "error": message, "code": code}).encode()
    return (status, {"content-type": "application/json"}, body)


@pytest.mark.parametrize(
    "status,code,cls",
    [
        (400, "invalid_request", magicauth.InvalidRequestError),
        (400, "invalid_token", magicauth.InvalidTokenError),
        (400, "token_used", magicauth.TokenAlreadyUsedError),
        (400, "token_expired", magicauth.TokenExpiredError),
        (401, "invalid_app_key", magicauth.AuthenticationError),
        (403, "app_disabled", magicauth.PermissionDeniedError),
        (403, "redirect_not_allowed", magicauth.PermissionDeniedError),
        (413, "payload_too_large", magicauth.InvalidRequestError),
        (429, "rate_limited", magicauth.RateLimitError),
        (429, "quota_exceeded", magicauth.RateLimitError),
        (500, "internal_error", magicauth.ServerError),
    ],
)
def test_every_code_maps_to_its_exception(stub: Any, status: int, code: str, cls: type) -> None:
    base_url, answer = stub
    response = api_error(status, code, f"message for {code}")
    response[1]["retry-after"] = "120"  # over the 30 s cap: not retried
    answer(response)
    client = magicauth.Client("mk_x", base_url=base_url, max_retries=0)
    with pytest.raises(cls) as info:
        client.verify_token("t")
    error = info.value
    assert (error.code, error.status, error.message) == (code, status, f"message for {code}")
    assert error.retry_after == (120.0 if status == 429 else None)


def test_non_json_5xx_is_server_error_with_raw_body(stub: Any) -> None:
    base_url, answer = stub
    answer((502, {"content-type": "text/html"}, b"<html>Bad gateway</html>"))
    with pytest.raises(magicauth.ServerError) as info:
        magicauth.Client("mk_x", base_url=base_url, max_retries=1).send_link("a@example.com")
    assert info.value.code == "server_error" and info.value.status == 502
    assert info.value.raw_body == "<html>Bad gateway</html>"
    assert len(Canned.seen) == 2, "retried once"


def test_retries_reuse_one_idempotency_key(stub: Any) -> None:
    base_url, answer = stub
    answer(api_error(503, "internal_error"), api_error(503, "internal_error"), (200, {}, b'{"success":true,"expires_in":900}'))
    client = magicauth.Client("mk_x", base_url=base_url, max_retries=2)
    assert client.send_link("a@example.com").expires_in == 900
    keys = {seen["idempotency-key"] for seen in Canned.seen}
    assert len(Canned.seen) == 3 and len(keys) == 1
    assert Canned.seen[0]["user-agent"].startswith("magicauth-python/")


def test_timeouts(stub: Any) -> None:
    base_url, answer = stub
    answer((200, {}, b'{"success":true,"expires_in":900}'), delay=0.5)
    with pytest.raises(magicauth.APITimeoutError) as info:
        magicauth.Client("mk_x", base_url=base_url, timeout=0.1, max_retries=0).send_link("a@example.com")
    assert info.value.code == "timeout"


def test_blocking_calls_release_the_gil(stub: Any) -> None:
    base_url, answer = stub
    answer((200, {}, b'{"success":true,"expires_in":900}'), delay=0.4)
    client = magicauth.Client("mk_x", base_url=base_url)
    ticks = 0
    done = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            time.sleep(0.001)

    counter = threading.Thread(target=count)
    counter.start()
    client.send_link("a@example.com")
    done.set()
    counter.join()
    assert ticks > 50, f"the other thread ran only {ticks} times during a 0.4 s call"


def test_eight_threads_share_one_client(testbed: Testbed, client: magicauth.Client) -> None:
    errors: List[BaseException] = []
    users: Dict[str, int] = {}

    def work(n: int) -> None:
        try:
            for i in range(3):
                email = f"thread{n}-{i}@example.com"
                users[email] = sign_in(testbed, client, email).user.id
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(users) == 24 and len(set(users.values())) == 24


def test_asyncio_gather_of_fifty_calls(testbed: Testbed, app: Dict[str, str]) -> None:
    async def main() -> None:
        client = magicauth.AsyncClient(app["app_key"], base_url=testbed.base_url)
        sent = await asyncio.gather(*(client.send_link(f"async{i}@example.com") for i in range(50)))
        assert all(s.expires_in == 900 for s in sent)
        results = await asyncio.gather(*(client.verify_token("bad") for _ in range(50)), return_exceptions=True)
        assert all(isinstance(r, magicauth.InvalidTokenError) for r in results)
        token = testbed.mail("async7@example.com")["token"]
        verification = await client.verify_token(token)
        claims = await client.verify_session(verification.token)
        assert claims.email == "async7@example.com"

    asyncio.run(main())


def test_async_does_not_block_the_event_loop(stub: Any) -> None:
    base_url, answer = stub
    answer((200, {}, b'{"success":true,"expires_in":900}'), delay=0.3)

    async def main() -> int:
        client = magicauth.AsyncClient("mk_x", base_url=base_url)
        ticks = 0
        call = asyncio.ensure_future(client.send_link("a@example.com"))
        while not call.done():
            ticks += 1
            await asyncio.sleep(0.005)
        assert (await call).expires_in == 900
        return ticks

    assert asyncio.run(main()) > 20


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_client_works_in_a_forked_child(testbed: Testbed, client: magicauth.Client) -> None:
    # Use the client (runtime and pool live) before forking, as a preloaded app would.
    sign_in(testbed, client, "parent@example.com")
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            verification = sign_in(testbed, client, "child@example.com")
            assert verification.user.email == "child@example.com"

            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, "the child could use the client"
    # And the parent still can.
    assert sign_in(testbed, client, "parent2@example.com").user.email == "parent2@example.com"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_async_client_works_in_a_forked_child(testbed: Testbed, app: Dict[str, str]) -> None:
    client = magicauth.AsyncClient(app["app_key"], base_url=testbed.base_url)
    asyncio.run(client.send_link("async-parent@example.com"))
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            sent = asyncio.run(client.send_link("async-child@example.com"))
            code = 0 if sent.expires_in == 900 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert testbed.mail("async-child@example.com")["to"] == ["async-child@example.com"]


def test_configuration_from_the_environment(testbed: Testbed, app: Dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAGICAUTH_APP_KEY", app["app_key"])
    monkeypatch.setenv("MAGICAUTH_BASE_URL", testbed.base_url)
    client = magicauth.Client()
    assert client.base_url == testbed.base_url
    assert client.send_link("env@example.com").expires_in == 900
    # Arguments win over the environment.
    assert magicauth.Client(base_url="http://127.0.0.1:9/api").base_url == "http://127.0.0.1:9/api"
    monkeypatch.delenv("MAGICAUTH_BASE_URL")
    assert magicauth.Client().base_url == "https://magicauth.app/api"
    monkeypatch.delenv("MAGICAUTH_APP_KEY")
    with pytest.raises(magicauth.ConfigurationError) as info:
        magicauth.Client()
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "options",
    [
        {"timeout": 0},
        {"timeout": -1},
        {"timeout": float("nan")},
        {"timeout": float("inf")},
        {"max_retries": -1},
        {"max_retries": 2**32},
    ],
)
def test_unusable_options_are_configuration_errors(options: Dict[str, Any]) -> None:
    # As in every binding: a MagicAuthError with code "configuration" (and, in
    # Python, a ValueError too).
    with pytest.raises(magicauth.ConfigurationError) as info:
        magicauth.Client("mk_x", **options)
    assert info.value.code == "configuration"
    assert isinstance(info.value, magicauth.MagicAuthError)
    assert isinstance(info.value, ValueError)


def test_the_key_never_shows(testbed: Testbed) -> None:
    secret = "mk_pythonSecretKeyDoNotShow000000000000000"
    client = magicauth.Client(secret, base_url=testbed.base_url)
    async_client = magicauth.AsyncClient(secret, base_url=testbed.base_url)
    shown = [repr(client), str(client), repr(async_client), repr(client._native)]
    with pytest.raises(magicauth.AuthenticationError) as info:
        client.send_link("a@example.com")
    shown += [str(info.value), repr(info.value), str(info.value.__cause__)]
    with pytest.raises(magicauth.APIConnectionError) as conn:
        magicauth.Client(secret, base_url="http://127.0.0.1:9/api", max_retries=0).send_link("a@example.com")
    shown += [str(conn.value), repr(conn.value), str(conn.value.__cause__)]
    for text in shown:
        assert "pythonSecretKey" not in text, text


def test_verification_repr_hides_the_session_token(testbed: Testbed, client: magicauth.Client) -> None:
    verification = sign_in(testbed, client, "repr@example.com")
    assert verification.token not in repr(verification)
    assert "repr@example.com" in repr(verification)


def test_version() -> None:
    assert magicauth.__version__ == "0.1.0"
    assert sys.version_info >= (3, 9)
