"""DSSE bundles: keyed ones we sign, and real keyless ones from Sigstore, verified offline."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from modelseal.attest import bundle, dsse, signers, statement
from modelseal.errors import InputError, SigningError, VerificationError
from modelseal.formats import STATEMENT_TYPE
from paths import SIGSTORE

DSSE_BUNDLE = SIGSTORE / "a.dsse.staging-rekor-v2.txt.sigstore.json"
BEACON = ("https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
          ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main")
GITHUB = "https://token.actions.githubusercontent.com"

needs_testdata = pytest.mark.skipif(not DSSE_BUNDLE.exists(), reason="no sigstore testdata")


@pytest.fixture
def key(tmp_path: Path) -> tuple[object, object]:
    k, p = signers.keygen(tmp_path / "k")
    return signers.load_signer(str(k)), signers.load_public_key(p)


def _statement() -> dict[str, object]:
    return statement.link_statement("train", ["python", "train.py"], [("data.csv", "11" * 32)],
                                    [("model.bin", "22" * 32)], {"return-value": 0}, {})


def test_keyed_bundle_has_the_contract_shape(key: tuple[object, object]) -> None:
    signer, pub = key
    data = bundle.sign_statement(_statement(), signer)  # type: ignore[arg-type]
    b = json.loads(data)
    assert b["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert b["verificationMaterial"]["publicKey"]["hint"] == pub.keyid  # type: ignore[attr-defined]
    env = b["dsseEnvelope"]
    assert env["payloadType"] == "application/vnd.in-toto+json"
    assert json.loads(base64.b64decode(env["payload"]))["_type"] == STATEMENT_TYPE
    assert env["signatures"][0]["keyid"] == pub.keyid  # type: ignore[attr-defined]


def test_keyed_bundle_signature_is_over_dsse_pae(key: tuple[object, object]) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    signer, pub = key
    b = json.loads(bundle.sign_statement(_statement(), signer))  # type: ignore[arg-type]
    env = b["dsseEnvelope"]
    payload = base64.b64decode(env["payload"])
    pae = b"DSSEv1 28 application/vnd.in-toto+json %d %b" % (len(payload), payload)
    assert dsse.pae(env["payloadType"], payload) == pae
    crypto = pub._crypto_key()  # type: ignore[attr-defined]
    crypto.verify(base64.b64decode(env["signatures"][0]["sig"]), pae, ec.ECDSA(hashes.SHA256()))


def test_keyed_bundle_parses_with_sigstore_protobuf_models(key: tuple[object, object]) -> None:
    """sigstore-python's Bundle needs a certificate and a log entry; its model does not."""
    from sigstore.models import Bundle, InvalidBundle
    from sigstore_models.bundle.v1 import Bundle as BundleModel

    data = bundle.sign_statement(_statement(), key[0])  # type: ignore[arg-type]
    model = BundleModel.from_json(data)
    assert model.verification_material.public_key.hint == key[1].keyid  # type: ignore[attr-defined]
    assert model.dsse_envelope.payload_type == "application/vnd.in-toto+json"
    with pytest.raises(InvalidBundle, match="expected certificate"):
        Bundle.from_json(data)


def test_keyed_bundle_verifies_and_names_the_key(key: tuple[object, object]) -> None:
    signer, pub = key
    data = bundle.sign_statement(_statement(), signer)  # type: ignore[arg-type]
    v = bundle.verify_bundle(data, keys={pub.keyid: pub})  # type: ignore[attr-defined]
    assert v.keyid == pub.keyid == v.signer_id  # type: ignore[attr-defined]
    assert v.predicate_type == statement.LINK_PREDICATE
    assert v.subjects == [("model.bin", "22" * 32)]
    assert v.bundle_digest.startswith("sha256:")


def test_verify_refuses_payload_swapped_after_signing(key: tuple[object, object]) -> None:
    signer, pub = key
    b = json.loads(bundle.sign_statement(_statement(), signer))  # type: ignore[arg-type]
    evil = _statement()
    evil["subject"] = [{"name": "model.bin", "digest": {"sha256": "66" * 32}}]
    b["dsseEnvelope"]["payload"] = base64.b64encode(bundle.canonical_json(evil)).decode()
    with pytest.raises(VerificationError, match="does not verify"):
        bundle.verify_bundle(json.dumps(b).encode(), keys={pub.keyid: pub})  # type: ignore[attr-defined]


def test_verify_refuses_payload_type_swapped(key: tuple[object, object]) -> None:
    signer, pub = key
    b = json.loads(bundle.sign_statement(_statement(), signer))  # type: ignore[arg-type]
    b["dsseEnvelope"]["payloadType"] = "text/plain"
    with pytest.raises(VerificationError):
        bundle.verify_bundle(json.dumps(b).encode(), keys={pub.keyid: pub})  # type: ignore[attr-defined]


def test_verify_refuses_untrusted_key_naming_it(key: tuple[object, object],
                                                tmp_path: Path) -> None:
    signer, pub = key
    data = bundle.sign_statement(_statement(), signer)  # type: ignore[arg-type]
    _, other_pub = signers.keygen(tmp_path / "other", algorithm="ed25519")
    other = signers.load_public_key(other_pub)
    with pytest.raises(VerificationError) as e:
        bundle.verify_bundle(data, keys={other.keyid: other})
    assert pub.keyid in str(e.value)  # type: ignore[attr-defined]
    with pytest.raises(VerificationError, match="no key is trusted"):
        bundle.verify_bundle(data)


def test_verify_finds_the_key_even_under_another_name(key: tuple[object, object]) -> None:
    signer, pub = key
    data = bundle.sign_statement(_statement(), signer)  # type: ignore[arg-type]
    assert bundle.verify_bundle(data, keys={"alice": pub}).keyid == pub.keyid  # type: ignore[arg-type, attr-defined]


def test_verify_refuses_a_forged_hint(key: tuple[object, object], tmp_path: Path) -> None:
    """A bundle that names a trusted key but was signed by another one."""
    signer, _ = key
    _, trusted_pub = signers.keygen(tmp_path / "trusted")
    trusted = signers.load_public_key(trusted_pub)
    b = json.loads(bundle.sign_statement(_statement(), signer))  # type: ignore[arg-type]
    b["verificationMaterial"]["publicKey"]["hint"] = trusted.keyid
    with pytest.raises(VerificationError, match=trusted.keyid):
        bundle.verify_bundle(json.dumps(b).encode(), keys={trusted.keyid: trusted})


def test_sign_refuses_what_is_not_a_statement(key: tuple[object, object]) -> None:
    with pytest.raises(InputError):
        bundle.sign_statement({"hello": "world"}, key[0])  # type: ignore[arg-type]


def test_parse_rejects_garbage() -> None:
    for data in (b"", b"[]", b'{"mediaType": "x"}', b"\xff\xfe"):
        with pytest.raises(InputError):
            bundle.parse_bundle(data)


# --- real keyless bundles, offline -----------------------------------------------------------


@needs_testdata
def test_parse_real_keyless_bundle_without_verifying() -> None:
    pb = bundle.parse_bundle(DSSE_BUNDLE.read_bytes())
    assert pb.keyless and pb.tlog_entries == 1
    assert pb.certificate_identity() == (BEACON, GITHUB)
    assert pb.predicate_type == "https://slsa.dev/provenance/v1"
    assert pb.signer_hint == f"{BEACON}|{GITHUB}"


@needs_testdata
def test_keyless_dsse_bundle_verifies_with_staging_root_and_identity() -> None:
    root = bundle.load_trusted_root(str(SIGSTORE / "staging_trusted_root.json"))
    v = bundle.verify_bundle(DSSE_BUNDLE.read_bytes(),
                             keyless=[bundle.KeylessIdentity(BEACON, GITHUB)], trusted_root=root)
    assert (v.identity, v.issuer, v.keyid) == (BEACON, GITHUB, None)
    assert v.signer_id == f"{BEACON}|{GITHUB}"
    assert v.predicate_type == "https://slsa.dev/provenance/v1"
    # the statement's own subject (the testdata's a.dsse.staging-rekor-v2.txt does not hash to it)
    a_txt = "a0cfc71271d6e278e57cd332ff957c3f7043fdda354c4cbb190a30d56efa01bf"
    assert v.subjects == [("a.txt", a_txt)]


@needs_testdata
def test_keyless_verifies_with_the_staging_root_shipped_in_sigstore() -> None:
    v = bundle.verify_bundle(DSSE_BUNDLE.read_bytes(),
                             keyless=[bundle.KeylessIdentity(BEACON, GITHUB)],
                             trusted_root=bundle.load_trusted_root("staging"))
    assert v.identity == BEACON


@needs_testdata
def test_keyless_one_of_several_identities_suffices() -> None:
    root = bundle.load_trusted_root(str(SIGSTORE / "staging_trusted_root.json"))
    v = bundle.verify_bundle(DSSE_BUNDLE.read_bytes(), trusted_root=root, keyless=[
        bundle.KeylessIdentity("someone@example.com", "https://accounts.google.com"),
        bundle.KeylessIdentity(BEACON, GITHUB)])
    assert v.identity == BEACON


@needs_testdata
@pytest.mark.parametrize(("identity", "issuer", "named"), [
    (BEACON + "x", GITHUB, BEACON + "x"),
    ("https://github.com/evil/repo/.github/workflows/x.yml@refs/heads/main", GITHUB, "evil"),
    (BEACON, "https://accounts.google.com", "https://accounts.google.com"),
])
def test_keyless_refuses_other_identity_or_issuer(identity: str, issuer: str, named: str) -> None:
    root = bundle.load_trusted_root(str(SIGSTORE / "staging_trusted_root.json"))
    with pytest.raises(VerificationError) as e:
        bundle.verify_bundle(DSSE_BUNDLE.read_bytes(),
                             keyless=[bundle.KeylessIdentity(identity, issuer)], trusted_root=root)
    assert named in str(e.value)


@needs_testdata
@pytest.mark.parametrize("root", ["prod_trusted_root.json", "production"])
def test_keyless_refuses_staging_signature_under_production_root(root: str) -> None:
    tr = bundle.load_trusted_root(str(SIGSTORE / root) if root.endswith(".json") else root)
    with pytest.raises(VerificationError, match="trusted root"):
        bundle.verify_bundle(DSSE_BUNDLE.read_bytes(),
                             keyless=[bundle.KeylessIdentity(BEACON, GITHUB)], trusted_root=tr)


@needs_testdata
def test_keyless_default_root_is_production_offline() -> None:
    with pytest.raises(VerificationError, match="trusted root"):
        bundle.verify_bundle(DSSE_BUNDLE.read_bytes(),
                             keyless=[bundle.KeylessIdentity(BEACON, GITHUB)])


@needs_testdata
def test_keyless_bundle_is_refused_when_only_keys_are_trusted(key: tuple[object, object]) -> None:
    pub = key[1]
    with pytest.raises(VerificationError, match="no Sigstore identity is trusted"):
        bundle.verify_bundle(DSSE_BUNDLE.read_bytes(), keys={pub.keyid: pub})  # type: ignore[attr-defined]


@needs_testdata
def test_keyless_refuses_a_tampered_payload() -> None:
    b = json.loads(DSSE_BUNDLE.read_bytes())
    st = json.loads(base64.b64decode(b["dsseEnvelope"]["payload"]))
    st["subject"][0]["digest"]["sha256"] = "00" * 32
    b["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(st).encode()).decode()
    root = bundle.load_trusted_root(str(SIGSTORE / "staging_trusted_root.json"))
    with pytest.raises(VerificationError):
        bundle.verify_bundle(json.dumps(b).encode(), trusted_root=root,
                             keyless=[bundle.KeylessIdentity(BEACON, GITHUB)])


@needs_testdata
def test_message_signature_bundle_is_not_an_attestation() -> None:
    with pytest.raises(VerificationError, match="not a DSSE envelope"):
        bundle.verify_bundle((SIGSTORE / "staging-rekor-v2.txt.sigstore.json").read_bytes())


def test_missing_trusted_root_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(VerificationError, match="trusted root"):
        bundle.load_trusted_root(str(tmp_path / "nope.json"))


def test_keyless_signing_refuses_an_empty_subject() -> None:
    class FakeKeyless:  # stands in for the token holder; sigstore itself is never reached
        def sign_dsse(self, payload: bytes) -> bytes:
            raise AssertionError("must not be called")

    st = statement.statement([], "https://example.com/p", {})
    with pytest.raises(SigningError, match="at least one subject"):
        bundle.sign_statement(st, FakeKeyless())  # type: ignore[arg-type]


@pytest.mark.keyless
@pytest.mark.skipif(not __import__("os").environ.get("MODELSEAL_TEST_KEYLESS"),
                    reason="opt-in: MODELSEAL_TEST_KEYLESS=1 with ambient OIDC credentials")
def test_keyless_signing_with_ambient_credentials() -> None:
    signer = signers.load_signer("sigstore:", prompt=False)
    data = bundle.sign_statement(_statement(), signer)
    ident = bundle.KeylessIdentity(signer.identity, signer.issuer)  # type: ignore[attr-defined]
    root = signers.load_client_trust_config("production").trusted_root  # fresh: new certs
    v = bundle.verify_bundle(data, keyless=[ident], trusted_root=root)
    assert v.identity == ident.identity
