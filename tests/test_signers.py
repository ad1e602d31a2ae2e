"""Signers from URIs and key files: every backend that can run here, and each way it can fail."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import hsm_fixtures
from modelseal.attest import bundle, signers, statement
from modelseal.errors import InputError, SigningError, VerificationError

STATEMENT = statement.statement([("model.bin", "ab" * 32)], statement.LINK_PREDICATE,
                                statement.link_predicate("train", ["true"], [], {}, {}))


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[hsm_fixtures.SoftHSM]:
    yield from hsm_fixtures.softhsm_token(tmp_path_factory)


@pytest.fixture(autouse=True)
def _no_secrets_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (signers.PASSPHRASE_ENV, signers.HSM_PIN_ENV, signers.OIDC_TOKEN_ENV):
        monkeypatch.delenv(var, raising=False)


def _sign_and_verify(signer: object, pub_path: Path | None = None) -> bundle.VerifiedStatement:
    data = bundle.sign_statement(STATEMENT, signer)  # type: ignore[arg-type]
    key = signers.load_public_key(pub_path) if pub_path else signer.public_key  # type: ignore[attr-defined]
    return bundle.verify_bundle(data, keys={key.keyid: key})


@pytest.mark.parametrize("algorithm", signers.ALGORITHMS)
def test_keygen_key_signs_and_its_pub_verifies(tmp_path: Path, algorithm: str) -> None:
    key, pub = signers.keygen(tmp_path / "alice", algorithm=algorithm)  # type: ignore[arg-type]
    assert key.name == "alice.key" and pub.name == "alice.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in key.read_bytes()
    assert b"BEGIN PUBLIC KEY" in pub.read_bytes()
    for uri in (str(key), f"file2:{key}"):
        v = _sign_and_verify(signers.load_signer(uri), pub)
        assert v.keyid == signers.keyid(signers.load_public_key(pub))
        assert v.signer_id == v.keyid and v.identity is None


def test_keygen_refuses_to_overwrite_a_key(tmp_path: Path) -> None:
    key, _ = signers.keygen(tmp_path / "k")
    before = key.read_bytes()
    with pytest.raises(InputError, match="already exists"):
        signers.keygen(tmp_path / "k", algorithm="ed25519")
    assert key.read_bytes() == before


def test_keygen_refuses_a_planted_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    (tmp_path / "k.key").symlink_to(target)
    with pytest.raises(InputError):
        signers.keygen(tmp_path / "k")
    assert not target.exists()


def test_encrypted_key_with_passphrase_from_env(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    key, pub = signers.keygen(tmp_path / "enc", passphrase=b"correct horse")
    assert b"ENCRYPTED" in key.read_bytes()
    monkeypatch.setenv(signers.PASSPHRASE_ENV, "correct horse")
    _sign_and_verify(signers.load_signer(str(key), prompt=False), pub)


def test_encrypted_key_refuses_wrong_passphrase(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    key, _ = signers.keygen(tmp_path / "enc", passphrase=b"correct horse")
    monkeypatch.setenv(signers.PASSPHRASE_ENV, "battery staple")
    with pytest.raises(SigningError, match="wrong passphrase"):
        signers.load_signer(str(key), prompt=False)


def test_encrypted_key_without_passphrase_or_terminal_names_the_env_var(tmp_path: Path) -> None:
    key, _ = signers.keygen(tmp_path / "enc", passphrase=b"pw")
    with pytest.raises(SigningError) as e:
        signers.load_signer(str(key), prompt=False)
    assert signers.PASSPHRASE_ENV in str(e.value)


def test_custom_passphrase_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key, pub = signers.keygen(tmp_path / "enc", passphrase=b"pw")
    monkeypatch.setenv("OTHER_VAR", "pw")
    _sign_and_verify(signers.load_signer(str(key), passphrase_env="OTHER_VAR", prompt=False), pub)


def test_missing_key_file_is_a_signing_error(tmp_path: Path) -> None:
    with pytest.raises(SigningError, match="no such file"):
        signers.load_signer(str(tmp_path / "nope.key"))


def test_non_pem_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.key").write_text("hello")
    with pytest.raises(SigningError, match="not a PEM private key"):
        signers.load_signer(str(tmp_path / "x.key"))


@pytest.mark.parametrize("uri", ["foo:bar", "pgp:ABCD", "kms://x"])
def test_unknown_signer_uri_is_refused_by_name(uri: str) -> None:
    with pytest.raises(SigningError, match="unknown signer") as e:
        signers.load_signer(uri)
    assert uri in str(e.value)


def test_keyless_without_oidc_token_is_a_signing_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("GITHUB_ACTIONS", "ACTIONS_ID_TOKEN_REQUEST_URL", "GITLAB_CI",
                "SIGSTORE_ID_TOKEN", "GOOGLE_SERVICE_ACCOUNT_NAME"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(SigningError, match="no OIDC token"):
        signers.load_signer("sigstore:", prompt=False)


def test_keyless_with_a_malformed_token_is_a_signing_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(signers.OIDC_TOKEN_ENV, "not-a-jwt")
    with pytest.raises(SigningError, match="OIDC token refused"):
        signers.load_signer("sigstore:", prompt=False)


def test_kms_uri_without_cloud_fails_cleanly() -> None:
    from securesystemslib.exceptions import UnsupportedLibraryError

    with pytest.raises(SigningError) as e:
        signers.load_signer("hv:nokey/1", prompt=False)
    # the backend's own reason (hvac missing), not a bug of ours such as a NameError
    assert isinstance(e.value.__cause__, UnsupportedLibraryError)


def test_kms_signer_is_dispatched_by_scheme_and_signs(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Every KMS URI goes through securesystemslib's scheme registry: a stand-in backend for
    ``hv:`` (no Vault here) proves the path from URI to a signature that verifies."""
    key_path, pub_path = signers.keygen(tmp_path / "kms", algorithm="ecdsa-p256")
    inner = signers.load_signer(str(key_path))
    mod = signers.sslib_signer()
    seen: list[str] = []

    class StandInVault(mod.Signer):  # type: ignore[misc, name-defined]
        @classmethod
        def from_priv_key_uri(cls, priv_key_uri: str, public_key: object,
                              secrets_handler: object = None) -> object:
            seen.append(priv_key_uri)
            return inner

    monkeypatch.setitem(mod.SIGNER_FOR_URI_SCHEME, "hv", StandInVault)
    pub = signers.load_public_key(pub_path)
    signer = signers.load_signer("hv:model-key/1", public_key=pub)
    assert seen == ["hv:model-key/1"]
    st = statement.statement([("model.bin", "ab" * 32)], "https://example.com/p", {})
    verified = bundle.verify_bundle(bundle.sign_statement(st, signer), keys={pub.keyid: pub})
    assert verified.keyid == pub.keyid


# --- SoftHSM2 ------------------------------------------------------------------------------


def test_hsm_signer_signs_and_verifies(softhsm: hsm_fixtures.SoftHSM,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(signers.HSM_PIN_ENV, softhsm.pin)
    monkeypatch.setenv(signers.PKCS11_LIB_ENV, softhsm.lib)
    signer = signers.load_signer(softhsm.uri, prompt=False)
    assert signer.public_key.scheme == "ecdsa-sha2-nistp256"
    v = _sign_and_verify(signer)
    assert v.keyid == signer.public_key.keyid


def test_hsm_module_defaults_to_softhsm(softhsm: hsm_fixtures.SoftHSM,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(signers.PKCS11_LIB_ENV, raising=False)
    monkeypatch.setenv(signers.HSM_PIN_ENV, softhsm.pin)
    _sign_and_verify(signers.load_signer(f"hsm:?label={softhsm.label}", prompt=False))


def test_hsm_wrong_pin_is_refused_before_signing(softhsm: hsm_fixtures.SoftHSM,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(signers.HSM_PIN_ENV, "000000")
    with pytest.raises(SigningError, match="wrong PIN"):
        signers.load_signer(softhsm.uri, prompt=False)


def test_hsm_missing_token_is_refused(softhsm: hsm_fixtures.SoftHSM,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(signers.HSM_PIN_ENV, softhsm.pin)
    with pytest.raises(SigningError, match="no PKCS#11 token labelled 'no-such-token'"):
        signers.load_signer("hsm:2?label=no-such-token", prompt=False)


def test_hsm_missing_key_is_refused(softhsm: hsm_fixtures.SoftHSM,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(signers.HSM_PIN_ENV, softhsm.pin)
    with pytest.raises(SigningError, match="PKCS#11"):
        signers.load_signer(f"hsm:7?label={softhsm.label}", prompt=False)


def test_hsm_without_pin_or_terminal_names_the_env_var(softhsm: hsm_fixtures.SoftHSM) -> None:
    with pytest.raises(SigningError) as e:
        signers.load_signer(softhsm.uri, prompt=False)
    assert signers.HSM_PIN_ENV in str(e.value)


def test_hsm_missing_module_is_refused(softhsm: hsm_fixtures.SoftHSM,
                                       monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(signers.PKCS11_LIB_ENV, str(tmp_path / "libnothing.so"))
    monkeypatch.setenv(signers.HSM_PIN_ENV, softhsm.pin)
    with pytest.raises(SigningError, match="does not exist"):
        signers.load_signer(softhsm.uri, prompt=False)


def test_signature_by_hsm_key_is_refused_with_another_key(softhsm: hsm_fixtures.SoftHSM,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    monkeypatch.setenv(signers.HSM_PIN_ENV, softhsm.pin)
    data = bundle.sign_statement(STATEMENT, signers.load_signer(softhsm.uri, prompt=False))
    _, pub = signers.keygen(tmp_path / "other")
    other = signers.load_public_key(pub)
    with pytest.raises(VerificationError, match="not trusted"):
        bundle.verify_bundle(data, keys={other.keyid: other})


def test_env_is_left_as_found() -> None:
    assert signers.HSM_PIN_ENV not in os.environ
