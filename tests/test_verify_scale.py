"""What makes verification of a model of very many files fast must not change what it
decides: a bundle parsed once is verified as if parsed anew, and a Link built without
in-toto's costly self-inspection still refuses what in-toto's Link refuses."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from in_toto.models.link import Link
from securesystemslib.exceptions import FormatError

from modelseal.attest import bundle, signers, statement
from modelseal.errors import InputError, VerificationError
from paths import SIGSTORE

DSSE_BUNDLE = SIGSTORE / "a.dsse.staging-rekor-v2.txt.sigstore.json"
BEACON = ("https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
          ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main")
GITHUB = "https://token.actions.githubusercontent.com"


@pytest.fixture
def key(tmp_path: Path) -> tuple[Any, Any]:
    k, p = signers.keygen(tmp_path / "k")
    return signers.load_signer(str(k)), signers.load_public_key(p)


def _statement() -> dict[str, Any]:
    return statement.link_statement("train", ["python", "train.py"], [("data.csv", "11" * 32)],
                                    [("model.bin", "22" * 32)], {"return-value": 0}, {})


def test_verify_with_parsed_bundle_refuses_payload_swapped_after_signing(
        key: tuple[Any, Any]) -> None:
    signer, pub = key
    b = json.loads(bundle.sign_statement(_statement(), signer))
    evil = _statement()
    evil["subject"] = [{"name": "model.bin", "digest": {"sha256": "66" * 32}}]
    b["dsseEnvelope"]["payload"] = base64.b64encode(bundle.canonical_json(evil)).decode()
    data = json.dumps(b).encode()
    pb = bundle.parse_bundle(data)
    assert pb.statement is not None  # read (unverified) before the signature is checked
    with pytest.raises(VerificationError, match="does not verify"):
        bundle.verify_bundle(data, keys={pub.keyid: pub}, parsed=pb)


def test_verify_refuses_a_parsed_bundle_of_other_bytes(key: tuple[Any, Any]) -> None:
    signer, pub = key
    good = bundle.sign_statement(_statement(), signer)
    other = _statement()
    other["subject"] = [{"name": "model.bin", "digest": {"sha256": "66" * 32}}]
    forged = bundle.parse_bundle(bundle.sign_statement(other, signer))
    with pytest.raises(ValueError):
        bundle.verify_bundle(good, keys={pub.keyid: pub}, parsed=forged)


def test_verify_with_parsed_bundle_gives_the_same_statement(key: tuple[Any, Any]) -> None:
    signer, pub = key
    data = bundle.sign_statement(_statement(), signer)
    fresh = bundle.verify_bundle(data, keys={pub.keyid: pub})
    pb = bundle.parse_bundle(data)
    again = bundle.verify_bundle(data, keys={pub.keyid: pub}, parsed=pb)
    assert again == fresh
    assert again.statement is pb.statement  # parsed once, not once per reader


def test_parsed_bundle_with_a_malformed_statement_has_none_every_time(
        key: tuple[Any, Any]) -> None:
    signer, _pub = key
    st = _statement()
    b = json.loads(bundle.sign_statement(st, signer))
    del st["predicateType"]
    b["dsseEnvelope"]["payload"] = base64.b64encode(bundle.canonical_json(st)).decode()
    pb = bundle.parse_bundle(json.dumps(b).encode())
    assert pb.statement is None and pb.statement is None and pb.predicate_type is None


@pytest.mark.skipif(not DSSE_BUNDLE.exists(), reason="no sigstore testdata")
def test_keyless_verify_with_parsed_bundle_gives_the_same_statement() -> None:
    root = bundle.load_trusted_root(str(SIGSTORE / "staging_trusted_root.json"))
    data = DSSE_BUNDLE.read_bytes()
    who = [bundle.KeylessIdentity(BEACON, GITHUB)]
    fresh = bundle.verify_bundle(data, keyless=who, trusted_root=root)
    again = bundle.verify_bundle(data, keyless=who, trusted_root=root,
                                 parsed=bundle.parse_bundle(data))
    assert again == fresh


@pytest.mark.parametrize("bad", ["zz", "ab" * 31 + "g1", "", 5])
@pytest.mark.parametrize("where", ["subject", "materials"])
def test_link_from_statement_refuses_what_in_totos_link_refuses(bad: object, where: str) -> None:
    st = _statement()
    entry = st["subject"][0] if where == "subject" else st["predicate"]["materials"][0]
    entry["digest"]["sha256"] = bad
    kind = "products" if where == "subject" else "materials"
    with pytest.raises(InputError):  # in-toto's FormatError, said as modelseal's InputError
        statement.statement_to_link(st)
    if not isinstance(bad, int):  # a non-string is refused earlier, by modelseal
        with pytest.raises(FormatError):
            Link(name="train", **{kind: {entry["name"]: {"sha256": bad}}})


def test_link_from_statement_is_the_link_in_toto_would_build() -> None:
    st = _statement()
    link = statement.statement_to_link(copy.deepcopy(st))
    ref = Link(name="train", materials={"data.csv": {"sha256": "11" * 32}},
               products={"model.bin": {"sha256": "22" * 32}},
               byproducts={"return-value": 0}, command=["python", "train.py"], environment={})
    assert link.signable_bytes == ref.signable_bytes


def test_shared_artifacts_leave_every_statement_equal_to_what_was_signed() -> None:
    from modelseal.verify.decision import _share_artifacts

    a = statement.link_statement("train", ["t"], [("d.csv", "11" * 32), ("x", "33" * 32)],
                                 [("m.bin", "22" * 32)])
    b = statement.link_statement("eval", ["e"], [("m.bin", "22" * 32)],
                                 [("d.csv", "44" * 32), ("x", "33" * 32)])
    b["subject"].append({"name": "odd", "digest": {"sha256": "55" * 32, "sha512": "66" * 64}})
    before = copy.deepcopy([a, b])
    shared: dict[Any, Any] = {}
    _share_artifacts(a, shared)
    _share_artifacts(b, shared)
    assert [a, b] == before
    assert a["predicate"]["materials"][1]["digest"] is b["subject"][1]["digest"]
    assert b["subject"][2]["digest"] == before[1]["subject"][2]["digest"]  # two algorithms
