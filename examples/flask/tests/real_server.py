"""The real MagicAuth server for these tests: the SDK suite's test bed
(``bindings-python/tests/testbed.py``: the server on loopback with a real SMTP
sink), seen through a typed interface.

mypy cannot follow the ``sys.path`` entry that makes ``testbed`` importable, so
:class:`RealServer` states the part of it these tests use."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, Protocol, cast

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "bindings-python" / "tests"))

import testbed  # type: ignore[import-not-found]  # noqa: E402

APP_URL = "http://localhost:5000"
"""The example's origin in the tests; its callback is the app's allowed redirect URL."""


class RealServer(Protocol):
    base_url: str

    def create_app(self, *args: str) -> Dict[str, str]: ...

    def mail(self, to: str, count: int = 1, timeout_ms: int = 15000) -> Dict[str, Any]: ...

    def advance_clock(self, seconds: int) -> None: ...

    def close(self) -> None: ...


def start_real_server() -> RealServer:
    return cast(RealServer, testbed.Testbed())
