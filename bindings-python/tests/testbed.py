"""Starts the MagicAuth test bed (the real server on loopback with a real SMTP
sink) and talks to its control API. Shared by the SDK suite and the Flask
example's tests."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, cast

REPO = Path(__file__).resolve().parents[2]


def testbed_binary() -> str:
    explicit = os.environ.get("MAGICAUTH_TESTBED")
    if explicit:
        return explicit
    for candidate in sorted(REPO.glob("target/*/magicauth-testbed")) + sorted(
        REPO.glob("target/*/*/magicauth-testbed")
    ):
        if candidate.is_file():
            return str(candidate)
    raise RuntimeError("magicauth-testbed not built: run `cargo build -p magicauth-testbed` or set MAGICAUTH_TESTBED")


class Testbed:
    __test__ = False  # not a test class, despite the name
    def __init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAGICAUTH_")}
        self._process = subprocess.Popen(
            [testbed_binary(), "--exit-on-stdin-eof"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the test bed exited before it was ready")
        info = json.loads(line)
        self.base_url: str = info["base_url"]
        self.server_url: str = info["server_url"]
        self.control_url: str = info["control_url"]
        self.null_base_url: str = info["null_base_url"]
        """An API stand-in that refuses every call at once (for benchmarks)."""

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def _call(self, method: str, path: str, body: Optional[Dict[str, Any]] = None, timeout: float = 30) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.control_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"{method} {path}: {error.code} {error.read().decode()}") from None

    def create_app(self, *args: str) -> Dict[str, str]:
        """``apps create`` with ``args``; returns ``{"app_id", "app_key"}``."""
        return cast(Dict[str, str], self._call("POST", "/apps", {"args": list(args)}))

    def cli(self, *args: str) -> str:
        return cast(str, self._call("POST", "/cli", {"args": list(args)})["stdout"])

    def mail(self, to: str, count: int = 1, timeout_ms: int = 15000) -> Dict[str, Any]:
        """The newest email to ``to`` once ``count`` have arrived."""
        query = urllib.parse.urlencode({"to": to, "min_count": count, "timeout_ms": timeout_ms})
        return cast(Dict[str, Any], self._call("GET", f"/mail?{query}", timeout=timeout_ms / 1000 + 5)["mail"])

    def advance_clock(self, seconds: int) -> None:
        self._call("POST", "/clock", {"advance_seconds": seconds})

    def set_smtp(self, up: bool) -> None:
        self._call("POST", "/smtp", {"up": up})


