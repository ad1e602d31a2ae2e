"""A real PKCS#11 token for tests: Debian's SoftHSM2 with a token dir of its own.

``SOFTHSM2_CONF`` points at a config in a temp dir, ``softhsm2-util --init-token`` creates the
token, python-pkcs11 generates an ECDSA P-256 key pair on it (CKA_ID 2, the id
securesystemslib's ``hsm:`` URIs default to). A PKCS#11 library is initialised once per
process, so the token is made once per session and ``SOFTHSM2_CONF`` stays set until the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from paths import missing_tool

SOFTHSM_LIB = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN_LABEL = "modelseal-test"
USER_PIN = "123456"
SO_PIN = "12345678"
KEY_ID = 2


@dataclass
class SoftHSM:
    conf: Path
    lib: str
    label: str
    pin: str
    key_id: int

    @property
    def uri(self) -> str:
        return f"hsm:{self.key_id}?label={self.label}"


def _init_token(tmp: Path) -> SoftHSM:
    tokens = tmp / "tokens"
    tokens.mkdir()
    conf = tmp / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
                    "log.level = ERROR\nslots.removable = false\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", TOKEN_LABEL,
                    "--pin", USER_PIN, "--so-pin", SO_PIN],
                   check=True, capture_output=True)

    import pkcs11
    from pkcs11.util.ec import encode_named_curve_parameters

    token = pkcs11.lib(SOFTHSM_LIB).get_token(token_label=TOKEN_LABEL)
    with token.open(rw=True, user_pin=USER_PIN) as session:
        params = session.create_domain_parameters(
            pkcs11.KeyType.EC,
            {pkcs11.Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
            local=True)
        params.generate_keypair(store=True, label="modelseal-signing",
                                id=pkcs11.util.biginteger(KEY_ID))
    return SoftHSM(conf, SOFTHSM_LIB, TOKEN_LABEL, USER_PIN, KEY_ID)


def softhsm_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHSM]:
    """Generator body for a session fixture: skips when SoftHSM2 is not installed."""
    if not os.path.exists(SOFTHSM_LIB) or shutil.which("softhsm2-util") is None:
        missing_tool("softhsm2")
    old = os.environ.get("SOFTHSM2_CONF")
    hsm = _init_token(tmp_path_factory.mktemp("softhsm"))
    try:
        yield hsm
    finally:
        if old is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = old
