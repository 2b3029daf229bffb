from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from testbed import Testbed  # noqa: E402

import magicauth  # noqa: E402


@pytest.fixture(scope="module")
def testbed() -> Iterator[Testbed]:
    """One test bed per module; tests that move its clock use ``own_testbed``."""
    bed = Testbed()
    yield bed
    bed.close()


@pytest.fixture
def own_testbed() -> Iterator[Testbed]:
    """A test bed for one test: for tests that move the server's clock (session
    JWTs checked against the real clock would then look issued in the future)."""
    bed = Testbed()
    yield bed
    bed.close()


@pytest.fixture
def app(testbed: Testbed) -> Dict[str, str]:
    """A fresh app: ``{"app_id", "app_key"}``."""
    return testbed.create_app("--name", "Python SDK", "--burst", "1000")


@pytest.fixture
def client(testbed: Testbed, app: Dict[str, str]) -> magicauth.Client:
    return magicauth.Client(app["app_key"], base_url=testbed.base_url)
