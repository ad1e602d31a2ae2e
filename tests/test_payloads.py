"""Typed payloads: a Statement or predicate read and written back is the same JSON, byte for
byte, unknown fields included (a re-signed or re-attached payload must not change), and a
malformed one is an InputError naming the field, never a crash."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelseal._util.json import canonical_json
from modelseal.attest import dsse
from modelseal.attest.payload import ResourceDescriptor, Statement
from modelseal.attest.predicates import (
    LinkPredicate,
    ModelSafety,
    ModelSigning,
    Provenance,
    TestResult,
    VerificationSummary,
)
from modelseal.attest.statement import (
    evaluation_predicate,
    link_statement,
    parse_threshold,
    provenance_predicate,
)
from modelseal.errors import InputError
from modelseal.formats import (
    LINK_PREDICATE,
    MODEL_SIGNING_PREDICATE,
    SAFETY_PREDICATE,
    SLSA_PROVENANCE_PREDICATE,
    STATEMENT_TYPE,
    TEST_RESULT_PREDICATE,
    VSA_PREDICATE,
)

HEX = st.text("0123456789abcdef", min_size=64, max_size=64)
TEXT = st.text(max_size=12)
SCALARS = st.none() | st.booleans() | st.integers(-10**6, 10**6) | TEXT
JSON = st.recursive(SCALARS, lambda c: st.lists(c, max_size=3)
                    | st.dictionaries(TEXT, c, max_size=3), max_leaves=8)
# names modelseal does not know: a producer's extension fields
UNKNOWN = st.dictionaries(st.text(min_size=1, max_size=8).map(lambda k: "x-" + k), JSON,
                          max_size=3)


def _with(known: st.SearchStrategy[dict[str, Any]],
          optional: dict[str, st.SearchStrategy[Any]] | None = None
          ) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with the ``known`` fields, any subset of ``optional`` ones, and unknown ones."""
    opt = st.fixed_dictionaries({}, optional=optional or {})
    return st.tuples(known, opt, UNKNOWN).map(lambda t: {**t[2], **t[1], **t[0]})


DIGESTS = st.dictionaries(st.sampled_from(["sha256", "sha512", "gitCommit"]), HEX,
                          min_size=1, max_size=2)
RD = _with(st.fixed_dictionaries({"digest": DIGESTS}),
           {"name": TEXT, "uri": TEXT, "annotations": st.dictionaries(TEXT, JSON, max_size=2)})
OBJ = st.dictionaries(TEXT, JSON, max_size=3)
STRS = st.lists(TEXT, max_size=3)

LINK = _with(st.fixed_dictionaries({"name": TEXT}),
             {"command": STRS, "materials": st.lists(RD, max_size=2), "byproducts": OBJ,
              "environment": OBJ})
PROVENANCE = _with(st.fixed_dictionaries({
    "buildDefinition": _with(st.fixed_dictionaries({"buildType": TEXT,
                                                    "externalParameters": OBJ}),
                             {"internalParameters": OBJ,
                              "resolvedDependencies": st.lists(RD, max_size=2)}),
    "runDetails": _with(st.fixed_dictionaries({
        "builder": _with(st.fixed_dictionaries({"id": TEXT}), {"version": OBJ})}),
        {"metadata": OBJ, "byproducts": st.lists(RD, max_size=1)}),
}))
TEST_RESULT = _with(st.fixed_dictionaries({"result": st.sampled_from(["PASSED", "FAILED"])}),
                    {"configuration": st.lists(RD, max_size=2), "url": TEXT,
                     "passedTests": STRS, "warnedTests": STRS, "failedTests": STRS,
                     "metrics": OBJ, "thresholds": st.lists(OBJ, max_size=2)})
SAFETY_FILE = _with(st.fixed_dictionaries({"path": TEXT, "digest": st.fixed_dictionaries(
    {"sha256": HEX}), "verdict": st.sampled_from(["safe", "unsafe", "unknown"])}),
    {"format": TEXT, "findings": st.lists(OBJ, max_size=2)})
SAFETY = _with(st.fixed_dictionaries({"files": st.lists(SAFETY_FILE, max_size=2)}),
               {"scanner": OBJ, "scannedAt": TEXT, "result": st.sampled_from(["PASSED", "FAILED"]),
                "summary": OBJ})
VSA = _with(st.fixed_dictionaries({
    "verifier": _with(st.fixed_dictionaries({"id": TEXT}), {"version": OBJ}),
    "verificationResult": st.sampled_from(["PASSED", "FAILED"])}),
    {"resourceUri": TEXT, "timeVerified": TEXT, "policy": RD,
     "inputAttestations": st.lists(RD, max_size=2), "verifiedLevels": STRS,
     "dependencyLevels": OBJ, "slsaVersion": TEXT})
MODEL_SIGNING = _with(st.fixed_dictionaries({
    "serialization": OBJ,
    "resources": st.lists(_with(st.fixed_dictionaries(
        {"name": TEXT, "algorithm": st.just("sha256"), "digest": HEX})), max_size=3)}))

CASES = [(LinkPredicate, LINK_PREDICATE, LINK), (Provenance, SLSA_PROVENANCE_PREDICATE, PROVENANCE),
         (TestResult, TEST_RESULT_PREDICATE, TEST_RESULT), (ModelSafety, SAFETY_PREDICATE, SAFETY),
         (VerificationSummary, VSA_PREDICATE, VSA),
         (ModelSigning, MODEL_SIGNING_PREDICATE, MODEL_SIGNING)]


def _statement(ptype: str, pred: st.SearchStrategy[dict[str, Any]]
               ) -> st.SearchStrategy[dict[str, Any]]:
    return _with(st.fixed_dictionaries({"_type": st.just(STATEMENT_TYPE),
                                        "subject": st.lists(RD, min_size=1, max_size=3),
                                        "predicateType": st.just(ptype), "predicate": pred}))


@settings(max_examples=40, deadline=None)
@given(RD)
def test_resource_descriptor_round_trips_with_unknown_fields(d: dict[str, Any]) -> None:
    rd = ResourceDescriptor.from_dict(d)
    assert rd.to_dict() == d
    assert canonical_json(rd.to_dict()) == canonical_json(d)
    assert ResourceDescriptor.from_dict(rd.to_dict()) == rd


@pytest.mark.parametrize(("cls", "ptype", "strategy"), CASES,
                         ids=[c[0].__name__ for c in CASES])
def test_predicate_round_trips_byte_for_byte_with_unknown_fields(
        cls: Any, ptype: str, strategy: st.SearchStrategy[dict[str, Any]]) -> None:
    @settings(max_examples=25, deadline=None)
    @given(_statement(ptype, strategy))
    def check(d: dict[str, Any]) -> None:
        s = Statement.from_dict(d)
        assert canonical_json(s.to_dict()) == canonical_json(d)
        assert Statement.from_dict(s.to_dict()) == s
        pred = s.predicate_as(cls)
        assert canonical_json(pred.to_dict()) == canonical_json(d["predicate"])
        assert cls.from_dict(pred.to_dict()) == pred

    check()


def test_builders_write_what_the_typed_classes_read_back() -> None:
    link = link_statement("train", ["python", "t.py"], [("data/a", "1" * 64)],
                          [("model/w", "2" * 64)], {"return-value": 0}, {"X": "1"})
    prov = provenance_predicate(hyperparameters={"lr": 0.1}, code_commit="abc",
                                datasets=[{"name": "d", "digest": {"sha256": "3" * 64}}])
    ev = evaluation_predicate({"acc": 0.95}, [parse_threshold("acc>=0.9")],
                              configuration=[{"name": "m", "digest": {"sha256": "4" * 64}}])
    for d, cls in ((link["predicate"], LinkPredicate), (prov, Provenance), (ev, TestResult)):
        assert cls.from_dict(d).to_dict() == d
    assert Statement.from_dict(link).to_dict() == link
    assert TestResult.from_dict(ev).result == "PASSED"


@pytest.mark.parametrize(("cls", "bad"), [
    (LinkPredicate, {"command": ["x"]}),  # no name
    (LinkPredicate, {"name": "s", "command": "python x.py"}),  # a string, not a list
    (LinkPredicate, {"name": "s", "materials": [{"digest": {"sha256": 5}}]}),
    (Provenance, {"buildDefinition": {"buildType": "t"}, "runDetails": {"builder": {"id": "b"}}}),
    (Provenance, {"buildDefinition": {"buildType": "t", "externalParameters": {}},
                  "runDetails": {"builder": "b"}}),
    (TestResult, {"result": "OK"}),
    (TestResult, {"result": "PASSED", "failedTests": [1]}),
    (ModelSafety, {"files": [{"path": "a"}]}),
    (VerificationSummary, {"verifier": {}, "verificationResult": "PASSED"}),
    (VerificationSummary, {"verifier": {"id": "v"}, "verificationResult": None}),
])
def test_malformed_predicate_is_an_input_error(cls: Any, bad: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        cls.from_dict(bad)


@settings(max_examples=100, deadline=None)
@given(JSON)
def test_any_json_is_a_statement_or_an_input_error(value: Any) -> None:
    for read in (Statement.from_dict, LinkPredicate.from_dict, Provenance.from_dict,
                 TestResult.from_dict, ModelSafety.from_dict, VerificationSummary.from_dict,
                 ModelSigning.from_dict):
        with contextlib.suppress(InputError):
            read(value)


def test_statement_refuses_a_subject_without_digest() -> None:
    with pytest.raises(InputError):
        Statement.from_dict({"_type": STATEMENT_TYPE, "subject": [{"name": "a"}],
                             "predicateType": "x"})


def test_predicate_as_refuses_another_predicate_type() -> None:
    s = Statement.from_dict({"_type": STATEMENT_TYPE, "subject": [], "predicateType": VSA_PREDICATE,
                             "predicate": {"name": "train"}})
    with pytest.raises(InputError):
        s.predicate_as(LinkPredicate)


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=64), TEXT, st.lists(st.tuples(TEXT, st.binary(min_size=1, max_size=8)),
                                              max_size=3), UNKNOWN)
def test_dsse_envelope_round_trips(payload: bytes, ptype: str, sigs: list[tuple[str, bytes]],
                                   extra: dict[str, Any]) -> None:
    env = dsse.Envelope(payload, ptype, [dsse.DsseSignature(k, s) for k, s in sigs], extra)
    d = env.to_dict()
    assert dsse.Envelope.from_dict(d) == env
    assert dsse.Envelope.from_dict(d).to_dict() == d


def test_dsse_envelope_refuses_too_many_signatures_unread() -> None:
    sigs = [{"keyid": "k", "sig": "!not base64!"}] * 1000
    with pytest.raises(InputError, match="signatures"):
        dsse.Envelope.from_dict({"payload": "", "payloadType": "t", "signatures": sigs})


@pytest.mark.parametrize("bad", [{"name": "x"}, {"name": 5, "digest": {"sha256": "0" * 64}},
                                 {"digest": {"sha256": None}}, "x", None])
@pytest.mark.parametrize("count", [3, 100])
def test_statement_check_and_read_agree_on_long_subject_lists(bad: Any, count: int) -> None:
    from modelseal.attest.payload import check_statement

    good = [{"name": f"f{i}", "digest": {"sha256": f"{i:064x}"}} for i in range(count)]
    st = {"_type": STATEMENT_TYPE, "subject": good, "predicateType": "x", "predicate": {}}
    check_statement(st)
    assert Statement.from_dict(st).to_dict() == st
    st["subject"] = [*good[: count // 2], bad, *good[count // 2:]]
    with pytest.raises(InputError):
        check_statement(st)
    with pytest.raises(InputError):
        Statement.from_dict(st)


def test_dsse_signature_covers_payload_type_and_payload(tmp_path: Any) -> None:
    from modelseal.attest.signers import keygen, load_public_key, load_signer

    key, pub = keygen(tmp_path / "k")
    signer, public = load_signer(str(key)), load_public_key(pub)
    env = dsse.Envelope(b'{"a":1}', "application/vnd.in-toto+json")
    env.sign(signer)
    env.sign(signer)  # re-signing with the same key replaces its signature
    assert len(env.signatures) == 1 and env.verify(public)
    assert dsse.Envelope.from_dict(env.to_dict()).verify(public)
    swapped = dsse.Envelope(b'{"a":2}', env.payload_type, env.signatures)
    retyped = dsse.Envelope(env.payload, "application/json", env.signatures)
    assert not swapped.verify(public) and not retyped.verify(public)


def test_dsse_refuses_to_sign_an_envelope_keylessly() -> None:
    from modelseal.errors import SigningError

    class Keyless:  # what attest.signers.is_keyless recognises
        identity, issuer = "ci@example.com", "https://issuer.example"

        def sign_dsse(self, payload: bytes) -> bytes:
            raise AssertionError("never called")

    with pytest.raises(SigningError):
        dsse.Envelope(b"{}", "t").sign(Keyless())  # type: ignore[arg-type]
