"""Runs the shared contract vectors (tests/contract/cases.json) with the Python SDK."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

import magicauth
from testbed import REPO, Testbed

CASES = json.loads((REPO / "tests" / "contract" / "cases.json").read_text())
assert CASES["format"] == 1

# SDK.md's table: Rust variant → Python class.
KINDS = {
    "InvalidToken": magicauth.InvalidTokenError,
    "TokenAlreadyUsed": magicauth.TokenAlreadyUsedError,
    "TokenExpired": magicauth.TokenExpiredError,
    "InvalidAppKey": magicauth.AuthenticationError,
    "Forbidden": magicauth.PermissionDeniedError,
    "RateLimited": magicauth.RateLimitError,
    "InvalidRequest": magicauth.InvalidRequestError,
    "Server": magicauth.ServerError,
    "Connection": magicauth.APIConnectionError,
    "Timeout": magicauth.APITimeoutError,
    "InvalidSession": magicauth.InvalidSessionError,
    "Configuration": magicauth.ConfigurationError,
}


def to_json(value: Any) -> Any:
    """Results as the vectors see them: plain JSON, timestamps as RFC 3339 `Z` strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        assert value.utcoffset() is not None and value.utcoffset().total_seconds() == 0
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


def subst(value: Any, variables: Dict[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("$"):
        return variables[value[1:]]
    if isinstance(value, list):
        return [subst(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: subst(v, variables) for k, v in value.items()}
    return value


def lookup(value: Any, path: str) -> Any:
    for key in path.split("."):
        assert isinstance(value, dict) and key in value, f"no {path} in {value}"
        value = value[key]
    return value


def text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def check(path: str, got: Any, want: Any) -> None:
    if want == "<timestamp>":
        ok = isinstance(got, str) and got.endswith("Z") and re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", got) is not None
    elif want == "<string>":
        ok = isinstance(got, str) and got != ""
    elif want == "<positive-int>":
        ok = isinstance(got, (int, float)) and not isinstance(got, bool) and got > 0 and int(got) == got
    elif want is None or got is None:
        ok = want is got
    else:
        ok = text(got) == text(want)
    assert ok, f"{path}: expected {want!r}, got {got!r}"


def sdk_call(client: magicauth.Client, action: str, arg: Dict[str, Any]) -> Any:
    if action == "send_link":
        return to_json(client.send_link(arg["email"], arg.get("redirect_url")))
    if action == "verify_token":
        return to_json(client.verify_token(arg["token"]))
    if action == "verify_session":
        return to_json(client.verify_session(arg["jwt"]))
    if action == "token_from_url":
        return {"value": client.token_from_url(arg["input"])}
    raise AssertionError(action)


def run_step(testbed: Testbed, variables: Dict[str, Any], step: Dict[str, Any]) -> None:
    action = next(k for k in step if k not in ("expect", "save", "client"))
    arg = subst(step[action], variables)
    error: Optional[magicauth.MagicAuthError] = None
    result: Any = None
    if action in ("send_link", "verify_token", "verify_session", "token_from_url"):
        overrides = subst(step.get("client", {}), variables)
        client = magicauth.Client(
            overrides.get("app_key", variables["app_key"]),
            base_url=overrides.get("base_url", testbed.base_url),
            max_retries=overrides.get("max_retries"),
        )
        try:
            result = sdk_call(client, action, arg)
        except magicauth.MagicAuthError as e:
            error = e
    elif action == "read_mail":
        result = testbed.mail(arg["to"], arg.get("count", 1))
    elif action == "create_app":
        result = testbed.create_app(*arg)
    elif action == "cli":
        out = testbed.cli(*arg)
        try:
            result = json.loads(out)
        except ValueError:
            result = {"stdout": out}
    elif action == "advance_clock":
        testbed.advance_clock(arg)
        result = {}
    else:
        raise AssertionError(f"unknown action {action}")

    expect = subst(step.get("expect", {"ok": {}}), variables)
    if "error" in expect:
        want = expect["error"]
        assert error is not None, f"expected {want}, got {result}"
        assert isinstance(error, KINDS[want["kind"]]), f"expected {want['kind']}, got {error!r}"
        got = {"kind": want["kind"], "code": error.code, "status": error.status, "retry_after": error.retry_after}
        for field, expected in want.items():
            check(field, got[field], expected)
        return
    assert error is None, f"unexpected {error!r}"
    for path, want in expect.get("ok", {}).items():
        check(path, lookup(result, path), want)
    for name, path in step.get("save", {}).items():
        variables[name] = lookup(result, path)


@pytest.mark.parametrize("case", CASES["cases"], ids=[c["name"] for c in CASES["cases"]])
def test_contract_vector(own_testbed: Testbed, case: Dict[str, Any]) -> None:
    testbed = own_testbed
    created = testbed.create_app(*case["app"])
    variables: Dict[str, Any] = {
        "app_id": created["app_id"],
        "app_key": created["app_key"],
        "server_url": testbed.server_url,
        "base_url": testbed.base_url,
    }
    for i, step in enumerate(case["steps"]):
        try:
            run_step(testbed, variables, step)
        except AssertionError as e:
            raise AssertionError(f"step {i} {json.dumps(step)}: {e}") from None
