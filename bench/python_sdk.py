"""Calls per second of ``verify_token``: the MagicAuth Python SDK against the
hand-rolled HTTP calls of the seed's Flask snippet, on one server in one run.

Clients:

- ``sdk``:              ``magicauth.Client(...).verify_token(token)``
- ``requests-session``: a ``requests.Session`` doing
  ``session.post(base_url + "/verify-token", json=...)`` (connections reused)
- ``requests-plain``:   ``requests.post(...)`` per call, as the seed literally does
  (a new connection each call)
- ``httpx``:            ``httpx.Client().post(...)`` (connections reused)
- ``requests-session+key``: the ``requests.Session`` client sending a fresh
  ``Idempotency-Key`` header per call, as the SDK does (so that a retried call
  is never done twice). The server stores a record per key (one more database
  write per refused call, two per success), so comparing with this row
  separates the SDK's own cost from the cost of that safety on the server.

The HTTP-library clients do the least an app must do with the answer: parse
the JSON and look at ``success`` (the SDK also checks the status, maps the
error to an exception class and parses the user into typed fields).

Paths:

- ``error``:   an unknown token, answered ``400 invalid_token`` (the SDK raises
  ``InvalidTokenError``, which is caught): mostly client and HTTP overhead.
- ``client-only``: the error path against the test bed's API stand-in
  (``null_base_url``), which answers every call at once with the same
  ``invalid_token`` error and does no work: each client's own cost per call,
  with the server's taken out. The issue's reference figures (a Rust-backed
  client about 120 µs per loopback call, ``requests`` about 750 µs) are of
  this kind.
- ``success``: real, single-use tokens (each used once), pre-created before any
  timing by sending links to distinct addresses from an app created with
  ``--burst 1000000`` and reading them from the test bed's SMTP sink. This path
  includes the server's database writes (the token's consumption, and the
  idempotency record for the clients that send a key).

Every client gets a warm-up, then the (path, client) runs are interleaved over
``--rounds`` rounds, the client order rotating each round; the table shows the
median round. Only figures are printed, nothing is asserted about them.

For honest numbers use release builds of both sides, from the repository root::

    pip install ./bindings-python requests httpx   # maturin builds release by default
    cargo build --release -p magicauth-testbed      # used automatically when present
    python bench/python_sdk.py                      # --rounds 5 --error-calls 2000 --success-calls 300

A development install (``MATURIN_PEP517_ARGS="--profile dev" pip install ...``)
or the debug test bed (``target/debug/magicauth-testbed``) measure unoptimised
code; the output says which builds were used. Set ``MAGICAUTH_TESTBED`` to
choose the test bed binary.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import secrets
import statistics
import struct
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Type

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bindings-python" / "tests"))

import httpx  # noqa: E402
import requests  # noqa: E402

import magicauth  # noqa: E402
import testbed as testbed_module  # noqa: E402

# cargo's release outputs: plain, and with CARGO_BUILD_TARGET set (as scripts/test does).
RELEASE_DIRS = (REPO / "target" / "release", REPO / "target" / "x86_64-unknown-linux-gnu" / "release")

SDK = "sdk"
CLIENTS = (SDK, "requests-session", "requests-plain", "httpx", "requests-session+key")
PATHS = ("error", "success", "client-only")


class VerifyRefused(Exception):
    """A ``{"success": false}`` answer, for the HTTP-library clients."""


@dataclass
class Contender:
    name: str
    verify: Callable[[str], Any]
    refused: Type[BaseException]
    """What ``verify`` raises for the error path's token."""
    close: Callable[[], None]


def contenders(app_key: str, base_url: str) -> List[Contender]:
    url = base_url + "/verify-token"

    def checked(response: Any) -> Any:
        data = response.json()
        if not data.get("success"):
            raise VerifyRefused(data.get("code"))
        return data["user"]

    sdk = magicauth.Client(app_key, base_url=base_url)
    session = requests.Session()
    keyed_session = requests.Session()
    httpx_client = httpx.Client()
    return [
        Contender(SDK, sdk.verify_token, magicauth.InvalidTokenError, lambda: None),
        Contender(
            "requests-session",
            lambda token: checked(session.post(url, json={"token": token, "app_key": app_key})),
            VerifyRefused,
            session.close,
        ),
        Contender(
            "requests-plain",
            lambda token: checked(requests.post(url, json={"token": token, "app_key": app_key})),
            VerifyRefused,
            lambda: None,
        ),
        Contender(
            "httpx",
            lambda token: checked(httpx_client.post(url, json={"token": token, "app_key": app_key})),
            VerifyRefused,
            httpx_client.close,
        ),
        Contender(
            "requests-session+key",
            lambda token: checked(
                keyed_session.post(
                    url,
                    json={"token": token, "app_key": app_key},
                    headers={"Idempotency-Key": secrets.token_urlsafe(16)},
                )
            ),
            VerifyRefused,
            keyed_session.close,
        ),
    ]


# --- Timed loops ----------------------------------------------------------------


def run_errors(contender: Contender, token: str, calls: int) -> float:
    """Seconds for ``calls`` refused verifies."""
    verify, refused = contender.verify, contender.refused
    start = time.perf_counter()
    for _ in range(calls):
        try:
            verify(token)
        except refused:
            pass
        else:
            raise RuntimeError(f"{contender.name}: an unknown token was accepted")
    return time.perf_counter() - start


def run_successes(contender: Contender, tokens: List[str]) -> float:
    """Seconds for verifying each of ``tokens`` once (each must succeed)."""
    verify = contender.verify
    start = time.perf_counter()
    for token in tokens:
        verify(token)
    return time.perf_counter() - start


# --- Setup ------------------------------------------------------------------------


def prepare_tokens(bed: Any, app_key: str, count: int) -> Iterator[str]:
    """``count`` fresh tokens: one link each to distinct addresses (the server
    allows 5 links per address per 15 minutes), read from the SMTP sink."""
    sender = magicauth.Client(app_key, base_url=bed.base_url)
    run = secrets.token_hex(4)
    addresses = [f"bench-{run}-{i}@example.com" for i in range(count)]
    # The server's outbox delivers the emails one after another: allow time.
    timeout_ms = max(120_000, count * 250)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(sender.send_link, addresses))
        tokens = list(pool.map(lambda address: str(bed.mail(address, 1, timeout_ms)["token"]), addresses))
    return iter(tokens)


def describe_testbed(binary: str) -> str:
    parts = Path(binary).parts
    build = "release" if "release" in parts else "debug" if "debug" in parts else "unknown build"
    return f"{binary} ({build})"


def describe_sdk_build() -> str:
    """Whether the loaded native module is an optimised build: the same file as
    one of the repository's cargo outputs, or else a guess from its ELF debug
    sections (``--profile dev`` keeps line tables; release strips them)."""
    native = Path(magicauth._native.__file__)
    digest = hashlib.sha256(native.read_bytes()).digest()
    for profile in ("release", "debug"):
        for target in (REPO / "target", REPO / "target" / "x86_64-unknown-linux-gnu"):
            artifact = target / profile / "lib_native.so"
            if artifact.is_file() and hashlib.sha256(artifact.read_bytes()).digest() == digest:
                return f"{profile} (identical to {artifact.relative_to(REPO)})"
    sections = elf_section_names(native)
    if sections is None:
        return "unknown build"
    if any(name.startswith(".debug_") for name in sections):
        return "probably debug (has debug sections)"
    return "probably release (no debug sections)"


def elf_section_names(path: Path) -> Optional[List[str]]:
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:  # 64-bit little-endian only
        return None
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    names_offset = struct.unpack_from("<Q", data, shoff + shstrndx * shentsize + 0x18)[0]
    names = []
    for i in range(shnum):
        name_index = struct.unpack_from("<I", data, shoff + i * shentsize)[0]
        start = names_offset + name_index
        names.append(data[start : data.index(b"\0", start)].decode("ascii", "replace"))
    return names


# --- Main ---------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is shown (default 5)")
    parser.add_argument("--error-calls", type=int, default=2000, help="error-path calls per client per round (2000)")
    parser.add_argument("--success-calls", type=int, default=300, help="success-path calls per client per round (300)")
    parser.add_argument("--warmup-calls", type=int, default=200, help="untimed error-path calls per client (200)")
    parser.add_argument("--warmup-tokens", type=int, default=10, help="untimed success-path calls per client (10)")
    args = parser.parse_args()

    for release_dir in RELEASE_DIRS:
        release_testbed = release_dir / "magicauth-testbed"
        if not os.environ.get("MAGICAUTH_TESTBED") and release_testbed.is_file():
            os.environ["MAGICAUTH_TESTBED"] = str(release_testbed)
    binary = testbed_module.testbed_binary()

    print(f"python      {platform.python_version()} ({platform.machine()}, {os.cpu_count()} CPUs)")
    print(f"magicauth   {magicauth.__version__} at {Path(magicauth.__file__).parent}: {describe_sdk_build()}")
    print(f"requests    {metadata.version('requests')}; httpx {metadata.version('httpx')}")
    print(f"test bed    {describe_testbed(binary)}")

    bed = testbed_module.Testbed()
    try:
        created = bed.create_app("--name", "Bench", "--plan", "custom", "--burst", "1000000")
        app_key = created["app_key"]
        per_client = args.rounds * args.success_calls + args.warmup_tokens
        started = time.perf_counter()
        print(f"tokens      sending {per_client * len(CLIENTS)} links and reading them from the SMTP sink…", flush=True)
        token_supply = prepare_tokens(bed, app_key, per_client * len(CLIENTS))
        print(f"tokens      ready in {time.perf_counter() - started:.1f} s (untimed)", flush=True)
        tokens: Dict[str, List[str]] = {name: [next(token_supply) for _ in range(per_client)] for name in CLIENTS}
        unknown_token = secrets.token_urlsafe(32)  # shaped like a real one, matches none

        players = contenders(app_key, bed.base_url)
        stand_in = {player.name: player for player in contenders(app_key, bed.null_base_url)}
        for player in players:
            run_errors(player, unknown_token, args.warmup_calls)
            run_errors(stand_in[player.name], unknown_token, args.warmup_calls)
            run_successes(player, tokens[player.name][: args.warmup_tokens])
            del tokens[player.name][: args.warmup_tokens]

        seconds: Dict[Tuple[str, str], List[float]] = {}
        for round_index in range(args.rounds):
            shift = round_index % len(players)
            order = players[shift:] + players[:shift]
            for path in PATHS:
                for player in order:
                    if path == "error":
                        elapsed = run_errors(player, unknown_token, args.error_calls)
                        calls = args.error_calls
                    elif path == "client-only":
                        elapsed = run_errors(stand_in[player.name], unknown_token, args.error_calls)
                        calls = args.error_calls
                    else:
                        batch = tokens[player.name][: args.success_calls]
                        del tokens[player.name][: args.success_calls]
                        elapsed = run_successes(player, batch)
                        calls = len(batch)
                    seconds.setdefault((player.name, path), []).append(elapsed / calls)
        for player in players + list(stand_in.values()):
            player.close()
    finally:
        bed.close()

    print()
    print(
        f"{args.rounds} rounds; per client and round: {args.error_calls} error calls, "
        f"{args.success_calls} success calls; median round shown"
    )
    print(f"{'client':<21} {'path':<11} {'calls/s':>10} {'µs/call':>10}   {'rounds (calls/s)'}")
    rate: Dict[Tuple[str, str], float] = {}
    for path in PATHS:
        for name in CLIENTS:
            per_call = statistics.median(seconds[(name, path)])
            rate[(name, path)] = 1 / per_call
            spread = " ".join(f"{1 / s:,.0f}" for s in seconds[(name, path)])
            print(f"{name:<21} {path:<11} {1 / per_call:>10,.0f} {per_call * 1e6:>10,.1f}   {spread}")
    print()
    print("calls/s ratios (> 1: the SDK is faster)")
    others = ("requests-session", "requests-plain", "httpx", "requests-session+key")
    print(f"{'path':<11}" + "".join(f" {'SDK/' + name:>25}" for name in others))
    for path in PATHS:
        sdk = rate[(SDK, path)]
        print(f"{path:<11}" + "".join(f" {sdk / rate[(name, path)]:>25.2f}" for name in others))


if __name__ == "__main__":
    main()
