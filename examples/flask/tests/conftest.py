"""Fixtures: the real MagicAuth server (one per module) and the example app
wired to a fresh MagicAuth app on it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the example's app.py

import magicauth  # noqa: E402
from app import create_app  # noqa: E402
from real_server import APP_URL, RealServer, start_real_server  # noqa: E402


@pytest.fixture(scope="module")
def testbed() -> Iterator[RealServer]:
    bed = start_real_server()
    yield bed
    bed.close()


@pytest.fixture
def own_testbed() -> Iterator[RealServer]:
    """A test bed for one test: for tests that move the server's clock (session
    JWTs checked against the real clock would then look issued in the future)."""
    bed = start_real_server()
    yield bed
    bed.close()


def example_app(server: RealServer, *flags: str) -> Flask:
    """The example, signed in to a new MagicAuth app (``apps create`` ``flags``)
    whose allowed redirect URL is the example's callback."""
    created = server.create_app("--name", "Flask example", "--redirect-url", APP_URL + "/auth/callback", *flags)
    client = magicauth.Client(created["app_key"], base_url=server.base_url)
    app = create_app(client, app_url=APP_URL, secret_key="test secret, not for production")
    app.config["TESTING"] = True
    return app


@pytest.fixture
def browser(testbed: RealServer) -> FlaskClient:
    """A browser (with a cookie jar) on the example, against the module's server."""
    return example_app(testbed).test_client()


@pytest.fixture
def short_link_browser(own_testbed: RealServer) -> FlaskClient:
    """A browser on the example against ``own_testbed``, whose links live 2 minutes."""
    return example_app(own_testbed, "--token-ttl", "2m").test_client()
