"""A real RFC 3161 Time-Stamp Authority on 127.0.0.1 for tests: OpenSSL's ``ts -reply``.

The server itself lives in ``scripts/local_tsa.py`` (the demo runs it too); this module adds
the pytest fixture. ``TSAServer(dir).start()`` makes a throwaway CA (``.ca_file``) and a TSA
certificate (critical EKU timeStamping), answers ``application/timestamp-query`` POSTs at
``.url``, counts them in ``.requests``, and answers ``.fail_with`` (an HTTP status) when set.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from paths import REPO, running

sys.path.insert(0, str(REPO / "scripts"))
from local_tsa import OPENSSL, TSAServer, make_tsa_pki

__all__ = ["OPENSSL", "TSAServer", "make_tsa_pki", "tsa"]


@pytest.fixture
def tsa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TSAServer]:
    """A running test TSA (import this fixture into a test module)."""
    yield from running(lambda: TSAServer(tmp_path_factory.mktemp("tsa")), OPENSSL)
