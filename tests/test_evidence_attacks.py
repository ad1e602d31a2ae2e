"""The attacker against every kind of evidence the verifier reads, class by class.

The model-safety scan whose files all said ``safe`` but whose own result was FAILED was once
accepted; these are its neighbours in the other evidence kinds a policy can require (test
results, VSAs, SLSA provenance, scans, model_signing signatures, ``max_attestation_age``):
a result that does not say it passed, evidence about another model, times, keys, and
contradicting or duplicated evidence. Each attack plays a ``MaliciousStore`` over the honest
pipeline (``attack_world``, an ``oci:`` image layout: milliseconds per attack), signed by a
legitimate layout key unless the class is about keys, and asserts on the refusal's fields
(rule, step, key, attestation, artifact), never its wording. Each class also shows the same
evidence saying it passed is accepted, so the refusal is for the reason named.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from attack_world import (
    World,
    build_world,
    find,
    ident,
    layout_doc,
    run,
    signer_of,
    step_referrers,
)
from malicious_store import MaliciousStore
from modelseal.attest.bundle import sign_statement
from modelseal.attest.model_signing import model_signing_statement
from modelseal.attest.statement import statement
from modelseal.formats import (
    MODEL_SIGNING_PREDICATE,
    SAFETY_PREDICATE,
    SLSA_PROVENANCE_PREDICATE,
    TEST_RESULT_PREDICATE,
    VSA_PREDICATE,
)
from modelseal.verify.result import VerificationResult

OTHER = hashlib.sha256(b"another model's weights").hexdigest()
TR_RULE = f"required predicate {TEST_RESULT_PREDICATE} (signed for step evaluate)"
TR_REQ = [{"type": TEST_RESULT_PREDICATE, "step": "evaluate"}]
VSA_RULE = f"required predicate {VSA_PREDICATE}"
PROV_RULE = f"required predicate {SLSA_PROVENANCE_PREDICATE}"
MS_RULE = f"required predicate {MODEL_SIGNING_PREDICATE}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("world")
    yield build_world(tmp, f"oci:{tmp}/registry")


# ---- helpers -----------------------------------------------------------------------------


def about_model(w: World, ptype: str, predicate: dict[str, Any]) -> dict[str, Any]:
    """A Statement about the whole model (every file, by name and digest)."""
    return statement(sorted(w.files.items()), ptype, predicate)


def attach(w: World, st: dict[str, Any], who: str,
           store: MaliciousStore | None = None) -> tuple[MaliciousStore, str]:
    """``st`` signed by functionary ``who`` and attached to the honest model."""
    store = store or MaliciousStore(w.p.store)
    return store, store.add(w.p.digest, sign_statement(st, signer_of(w, who)))


def at(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def vsa(w: World, **pred: Any) -> dict[str, Any]:
    """A VSA about the model's manifest, PASSED unless ``pred`` says otherwise."""
    p: dict[str, Any] = {"verifier": {"id": "https://verifier.example"},
                         "resourceUri": f"{w.p.ref.base}@{w.p.digest}",
                         "verificationResult": "PASSED", "verifiedLevels": ["SLSA_BUILD_LEVEL_3"]}
    p.update(pred)
    return statement([(w.p.ref.base, w.p.digest)], VSA_PREDICATE,
                     {k: v for k, v in p.items() if v is not None})


def scan(files: dict[str, str], result: str = "PASSED", **extra: Any) -> dict[str, Any]:
    return {"result": result, **extra,
            "files": [{"path": p, "digest": {"sha256": d}, "format": "safetensors",
                       "verdict": "safe", "codeExecuting": False, "findings": []}
                      for p, d in sorted(files.items())]}


def refused_for(r: VerificationResult, rule: str, att: str, key: str | None = None) -> None:
    """``r`` refused, by ``rule`` naming ``att`` (and ``key``); or ``att`` never counted at
    all (the bundle could not be read) and ``rule`` found nothing: never accepted."""
    assert not r.verified
    named = [x for x in r.refusals if x.rule == rule and x.attestation == att]
    if named:
        if key is not None:
            assert any(x.key == key for x in named), [x.to_dict() for x in named]
        return
    assert any(i.attestation == att for i in r.ignored), [x.to_dict() for x in r.refusals]
    find(r, rule=rule)


# ---- 1. a test result that does not say it passed ----------------------------------------


PASSING_TR = {"result": "PASSED", "passedTests": ["accuracy>=0.9"],
              "metrics": {"accuracy": 0.95},
              "thresholds": [{"metric": "accuracy", "op": ">=", "value": 0.9}]}


def _tr(**change: Any) -> dict[str, Any]:
    p = copy.deepcopy(PASSING_TR)
    p.update(change)
    return {k: v for k, v in p.items() if v is not None}


@pytest.mark.parametrize("predicate", [
    _tr(result="FAILED"), _tr(result="ERROR"), _tr(result="passed"), _tr(result="WARNED"),
    _tr(result=None), _tr(result=True), _tr(result=1), _tr(result=["PASSED"]),
    _tr(failedTests=["accuracy>=0.9"]), _tr(failedTests="accuracy>=0.9"),
    _tr(failedTests={"accuracy": "miss"}), _tr(passedTests="everything"),
    _tr(passedTests=[], thresholds=[], metrics={}),
    _tr(passedTests=[], thresholds=None),
    _tr(passedTests=None, thresholds=[]),
    _tr(metrics={"accuracy": float("nan")}), _tr(metrics={"accuracy": float("inf")}),
    _tr(metrics={"accuracy": True}), _tr(metrics={"loss": 0.1}),
    _tr(thresholds=[{"metric": "accuracy", "op": ">=", "value": float("-inf")}]),
    _tr(thresholds=[{"metric": "accuracy", "op": ">=", "value": float("nan")}]),
    _tr(thresholds=[{"metric": "accuracy", "op": "~", "value": 0.9}]),
    _tr(thresholds=[{"metric": "accuracy", "op": ">="}]),
    _tr(thresholds={"accuracy": 0.9}), _tr(metrics=[0.95]),
], ids=["failed", "error", "lowercase", "warned", "missing", "bool", "number", "list",
        "failed-tests", "failed-tests-string", "failed-tests-object", "passed-tests-string",
        "no-tests-no-thresholds", "empty-passed-tests", "empty-thresholds",
        "nan-metric", "inf-metric", "bool-metric", "metric-the-results-lack",
        "threshold-minus-inf", "threshold-nan", "unknown-op", "threshold-without-value",
        "thresholds-not-a-list", "metrics-not-an-object"])
def test_test_result_that_does_not_say_it_passed_counts_for_nothing(
        world: World, tmp_path: Path, predicate: dict[str, Any]) -> None:
    w = world
    store, att = attach(w, about_model(w, TEST_RESULT_PREDICATE, predicate), "evaluator")
    r = run(w, tmp_path, store, required_predicates=TR_REQ)
    refused_for(r, TR_RULE, att, ident(w, "evaluator"))


def test_test_result_that_says_it_passed_is_accepted(world: World, tmp_path: Path) -> None:
    w = world
    for pred in (PASSING_TR, {"result": "PASSED"},
                 _tr(passedTests=["smoke"], thresholds=[], metrics={})):
        store, _ = attach(w, about_model(w, TEST_RESULT_PREDICATE, pred), "evaluator")
        r = run(w, tmp_path, store, required_predicates=TR_REQ)
        assert r.verified, (pred, [x.to_dict() for x in r.refusals])


# ---- 2. a VSA that does not say it passed, or is about another model ---------------------


@pytest.mark.parametrize("change", [
    {"verificationResult": "FAILED"}, {"verificationResult": "passed"},
    {"verificationResult": None}, {"verificationResult": True},
    {"verificationResult": ["PASSED"]}, {"verifiedLevels": ["FAILED"]},
    {"verifiedLevels": "SLSA_BUILD_LEVEL_3"},
], ids=["failed", "lowercase", "missing", "bool", "list", "failed-level", "levels-string"])
def test_vsa_that_does_not_say_it_passed_counts_for_nothing(world: World, tmp_path: Path,
                                                            change: dict[str, Any]) -> None:
    w = world
    store, att = attach(w, vsa(w, **change), "approver")
    r = run(w, tmp_path, store, required_predicates=[VSA_PREDICATE])
    refused_for(r, VSA_RULE, att, ident(w, "approver"))


@pytest.mark.parametrize("uri", [
    f"registry.example/other/model@sha256:{OTHER}", "registry.example/tiny/model:v1",
    "{base}:v1", "{base}", 42, ["{base}@{digest}"],
], ids=["another-digest", "another-tag", "this-repo-by-tag", "no-digest", "number", "list"])
def test_vsa_whose_resource_is_another_model_or_a_tag_counts_for_nothing(
        world: World, tmp_path: Path, uri: Any) -> None:
    """The subject is this manifest, but the summary says it verified something else (or a
    tag, which can move): it is no summary of this model."""
    w = world

    def fill(u: Any) -> Any:
        if isinstance(u, list):
            return [fill(x) for x in u]
        return u.format(base=w.p.ref.base, digest=w.p.digest) if isinstance(u, str) else u

    store, att = attach(w, vsa(w, resourceUri=fill(uri)), "approver")
    r = run(w, tmp_path, store, required_predicates=[VSA_PREDICATE])
    refused_for(r, VSA_RULE, att, ident(w, "approver"))


def test_vsa_whose_subject_is_another_model_counts_for_nothing(world: World,
                                                               tmp_path: Path) -> None:
    w = world
    st = vsa(w)
    st["subject"] = [{"name": w.p.ref.base, "digest": {"sha256": OTHER}}]
    store, att = attach(w, st, "approver")
    r = run(w, tmp_path, store, required_predicates=[VSA_PREDICATE])
    refused_for(r, VSA_RULE, att)


def test_vsa_about_this_model_by_digest_is_accepted(world: World, tmp_path: Path) -> None:
    w = world
    for st in (vsa(w), vsa(w, resourceUri=None, verifiedLevels=None)):
        store, _ = attach(w, st, "approver")
        r = run(w, tmp_path, store, required_predicates=[VSA_PREDICATE])
        assert r.verified, [x.to_dict() for x in r.refusals]


# ---- 3. evidence about another model -----------------------------------------------------


def _swapped(w: World) -> list[tuple[str, str]]:
    """The model's file names with their digests rotated: every digest is this model's,
    every name is too, but no name has its own bytes."""
    names = sorted(w.files)
    return [(n, w.files[names[(i + 1) % len(names)]]) for i, n in enumerate(names)]


@pytest.mark.parametrize("subjects", ["another-digest", "right-name-other-digest",
                                      "swapped-names", "no-subject", "another-manifest"])
def test_test_result_about_another_model_counts_for_nothing(world: World, tmp_path: Path,
                                                            subjects: str) -> None:
    w = world
    first = sorted(w.files)[0]
    subs = {"another-digest": [*sorted(w.files.items()), ("other.bin", OTHER)],
            "right-name-other-digest": [(first, OTHER)]
            + [(n, d) for n, d in sorted(w.files.items()) if n != first],
            "swapped-names": _swapped(w),
            "no-subject": [],
            "another-manifest": [("model", OTHER)]}[subjects]
    st = statement(subs, TEST_RESULT_PREDICATE, PASSING_TR)
    store, att = attach(w, st, "evaluator")
    r = run(w, tmp_path, store, required_predicates=TR_REQ)
    x = find(r, rule=TR_RULE, attestation=att, key=ident(w, "evaluator"))
    if subjects in ("right-name-other-digest", "swapped-names"):
        assert x.artifact in w.files


def test_provenance_whose_subject_is_another_file_set_counts_for_nothing(
        world: World, tmp_path: Path) -> None:
    w = world
    pred = {"buildDefinition": {"buildType": "https://example/train"},
            "runDetails": {"builder": {"id": "https://example/ci"}}}
    names = sorted(w.files)
    for subs in (_swapped(w), [(n, w.files[n]) for n in names[1:]],
                 [*sorted(w.files.items()), ("extra.bin", OTHER)]):
        store, att = attach(w, statement(subs, SLSA_PROVENANCE_PREDICATE, pred), "trainer")
        r = run(w, tmp_path, store, required_predicates=[SLSA_PROVENANCE_PREDICATE])
        find(r, rule=PROV_RULE, attestation=att, key=ident(w, "trainer"))
    store, _ = attach(w, about_model(w, SLSA_PROVENANCE_PREDICATE, pred), "trainer")
    assert run(w, tmp_path, store, required_predicates=[SLSA_PROVENANCE_PREDICATE]).verified


@pytest.mark.parametrize("files", ["another-models-files", "right-names-other-digests",
                                   "swapped-names"])
def test_scan_covering_another_models_files_counts_for_nothing(world: World, tmp_path: Path,
                                                               files: str) -> None:
    """The Statement's subjects are this model; the scanned file entries are not."""
    w = world
    entries = {"another-models-files": {"other.bin": OTHER},
               "right-names-other-digests": dict.fromkeys(w.files, OTHER),
               "swapped-names": dict(_swapped(w))}[files]
    store, att = attach(w, about_model(w, SAFETY_PREDICATE, scan(entries)), "release")
    r = run(w, tmp_path, store, model_safety=True)
    x = find(r, rule="model safety", attestation=att, key=ident(w, "release"))
    assert x.artifact in w.files
    store, _ = attach(w, about_model(w, SAFETY_PREDICATE, scan(w.files)), "release")
    r = run(w, tmp_path, store, model_safety=True)
    assert not [x for x in r.refusals if x.rule == "model safety"], r.refusals


def test_bom_about_another_model_counts_for_nothing(world: World, tmp_path: Path) -> None:
    w = world
    bom = {"bomFormat": "CycloneDX", "specVersion": "1.6", "components": []}
    store, att = attach(w, statement([("model", OTHER)], "https://cyclonedx.org/bom", bom),
                        "release")
    r = run(w, tmp_path, store, required_predicates=["https://cyclonedx.org/bom"])
    find(r, rule="required predicate https://cyclonedx.org/bom", attestation=att)


# ---- 4. model_signing signatures ---------------------------------------------------------


def test_model_signing_signature_of_this_model_satisfies_a_policy_requiring_one(
        world: World, tmp_path: Path) -> None:
    """Its one subject is a digest over the file digests, never a file or the manifest:
    judged by the (path, digest) pairs it signs, which must be exactly the model's."""
    w = world
    store, _ = attach(w, model_signing_statement(sorted(w.files.items())), "release")
    r = run(w, tmp_path, store, required_predicates=[MODEL_SIGNING_PREDICATE])
    assert r.verified, [x.to_dict() for x in r.refusals]


@pytest.mark.parametrize("files", ["missing-file", "extra-file", "right-name-other-digest",
                                   "swapped-names", "inconsistent-subject"])
def test_model_signing_signature_of_another_file_set_counts_for_nothing(
        world: World, tmp_path: Path, files: str) -> None:
    w = world
    names = sorted(w.files)
    pairs = {"missing-file": [(n, w.files[n]) for n in names[1:]],
             "extra-file": [*sorted(w.files.items()), ("extra.bin", OTHER)],
             "right-name-other-digest": [(names[0], OTHER)]
             + [(n, w.files[n]) for n in names[1:]],
             "swapped-names": _swapped(w),
             "inconsistent-subject": sorted(w.files.items())}[files]
    st = model_signing_statement(pairs)
    if files == "inconsistent-subject":
        st["subject"][0]["digest"]["sha256"] = OTHER
    store, att = attach(w, st, "release")
    r = run(w, tmp_path, store, required_predicates=[MODEL_SIGNING_PREDICATE])
    x = find(r, rule=MS_RULE, attestation=att, key=ident(w, "release"))
    if files != "inconsistent-subject":
        assert x.artifact in set(w.files) | {"extra.bin"}


# ---- 5. times ----------------------------------------------------------------------------


def _timed(w: World, kind: str, when: Any) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """(Statement carrying signed time ``when`` in ``kind``'s field, signer, policy)."""
    if kind == "test-result-timeVerified":
        return (about_model(w, TEST_RESULT_PREDICATE, _tr(timeVerified=when)), "evaluator",
                {"required_predicates": TR_REQ})
    if kind in ("provenance-startedOn", "provenance-finishedOn"):
        meta = {kind.partition("-")[2]: when}
        pred = {"buildDefinition": {}, "runDetails": {"metadata": meta}}
        return (about_model(w, SLSA_PROVENANCE_PREDICATE, pred), "trainer",
                {"required_predicates": [SLSA_PROVENANCE_PREDICATE]})
    if kind == "vsa-timeVerified":
        return vsa(w, timeVerified=when), "approver", {"required_predicates": [VSA_PREDICATE]}
    assert kind == "scan-scannedAt"
    return (about_model(w, SAFETY_PREDICATE, scan(w.files, scannedAt=when)), "release",
            {"model_safety": True})


KINDS = ["test-result-timeVerified", "provenance-startedOn", "provenance-finishedOn",
         "vsa-timeVerified", "scan-scannedAt"]
AHEAD = datetime.now(UTC) + timedelta(hours=2)


@pytest.mark.parametrize("when", [
    at(AHEAD), AHEAD.astimezone(timezone(timedelta(hours=-11))).isoformat(),
    "yesterday", "2026-13-45T00:00:00Z", 1893456000, True, {"t": "2020-01-01T00:00:00Z"},
], ids=["future-utc", "future-in-minus-11", "words", "no-such-date", "epoch-number", "bool",
        "object"])
@pytest.mark.parametrize("kind", KINDS)
def test_signed_time_in_the_future_or_unreadable_is_refused(world: World, tmp_path: Path,
                                                            kind: str, when: Any) -> None:
    w = world
    st, who, policy = _timed(w, kind, when)
    store, att = attach(w, st, who)
    r = run(w, tmp_path, store, **policy)
    find(r, rule="signed time", attestation=att, key=ident(w, who))


@pytest.mark.parametrize("kind", KINDS)
def test_signed_time_in_the_past_in_any_timezone_is_accepted(world: World, tmp_path: Path,
                                                             kind: str) -> None:
    """An hour ago written in +14:00 reads as thirteen hours ahead of UTC, and is not."""
    w = world
    before = datetime.now(UTC) - timedelta(hours=1)
    st, who, policy = _timed(w, kind, before.astimezone(timezone(timedelta(hours=14)))
                             .isoformat())
    store, _ = attach(w, st, who)
    r = run(w, tmp_path, store, max_attestation_age="1d", **policy)
    assert r.verified, [x.to_dict() for x in r.refusals]


@pytest.mark.parametrize("kind", KINDS)
def test_old_signed_time_fails_max_attestation_age(world: World, tmp_path: Path,
                                                   kind: str) -> None:
    """Every kind of counted evidence is judged by its signed time, the scan too."""
    w = world
    st, who, policy = _timed(w, kind, at(datetime.now(UTC) - timedelta(days=400)))
    store, att = attach(w, st, who)
    r = run(w, tmp_path, store, max_attestation_age="90d", **policy)
    find(r, rule="max attestation age 90 days, 0:00:00", attestation=att, key=ident(w, who))


def test_unsigned_registry_time_in_the_future_is_only_a_hint(world: World,
                                                             tmp_path: Path) -> None:
    """The referrer's created annotation says 2999: not refused, and not an age either."""
    w = world
    store = MaliciousStore(w.p.store)
    store.add(w.p.digest, sign_statement(about_model(w, TEST_RESULT_PREDICATE, PASSING_TR),
                                         signer_of(w, "evaluator")),
              created="2999-01-01T00:00:00Z")
    r = run(w, tmp_path, store, required_predicates=TR_REQ)
    assert r.verified, [x.to_dict() for x in r.refusals]
    r = run(w, tmp_path, store, required_predicates=TR_REQ, max_attestation_age="90d")
    find(r, rule="max attestation age 90 days, 0:00:00", attestation=None)


# ---- 6. keys -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["test-result", "vsa", "scan"])
def test_evidence_signed_by_another_steps_key_counts_for_nothing(world: World, tmp_path: Path,
                                                                 kind: str) -> None:
    w = world
    if kind == "test-result":
        st, policy, rule = (about_model(w, TEST_RESULT_PREDICATE, PASSING_TR),
                            {"required_predicates": TR_REQ}, TR_RULE)
    elif kind == "vsa":
        st, policy, rule = (vsa(w), {"required_predicates": [
            {"type": VSA_PREDICATE, "step": "approve"}]},
            f"{VSA_RULE} (signed for step approve)")
    else:
        st, policy, rule = (about_model(w, SAFETY_PREDICATE, scan(w.files)),
                            {"model_safety": {"step": "package"}}, "model safety")
    store, att = attach(w, st, "trainer")
    r = run(w, tmp_path, store, **policy)
    find(r, rule=rule, attestation=att, key=ident(w, "trainer"))


def test_evidence_signed_by_a_key_of_another_layout_counts_for_nothing(
        world: World, tmp_path: Path) -> None:
    """The evaluator's key is dropped from this layout (an old layout's key)."""
    w = world
    doc = layout_doc(w)
    ev = next(s for s in doc["steps"] if s["name"] == "evaluate")
    old = ev["pubkeys"][0]
    ev["pubkeys"] = [next(s for s in doc["steps"] if s["name"] == "train")["pubkeys"][0]]
    doc["keys"].pop(old)
    store, att = attach(w, about_model(w, TEST_RESULT_PREDICATE, PASSING_TR), "evaluator")
    for d in step_referrers(w, "evaluate"):
        store.hide(d)
    r = run(w, tmp_path, store, doc, required_predicates=[TEST_RESULT_PREDICATE])
    find(r, rule=f"required predicate {TEST_RESULT_PREDICATE}")
    assert any(i.attestation == att for i in r.ignored)


# ---- 7. contradiction and duplicates -----------------------------------------------------


@pytest.mark.parametrize("kind", ["test-result", "vsa", "scan"])
def test_passed_and_failed_by_two_functionaries_is_a_refusal(world: World, tmp_path: Path,
                                                             kind: str) -> None:
    w = world
    if kind == "test-result":
        good, bad = (about_model(w, TEST_RESULT_PREDICATE, PASSING_TR),
                     about_model(w, TEST_RESULT_PREDICATE, _tr(result="FAILED")))
        policy, rule = {"required_predicates": [TEST_RESULT_PREDICATE]}, \
            f"required predicate {TEST_RESULT_PREDICATE}"
    elif kind == "vsa":
        good, bad = vsa(w), vsa(w, verificationResult="FAILED", verifiedLevels=["FAILED"])
        policy, rule = {"required_predicates": [VSA_PREDICATE]}, VSA_RULE
    else:
        good, bad = (about_model(w, SAFETY_PREDICATE, scan(w.files)),
                     about_model(w, SAFETY_PREDICATE, scan(w.files, result="FAILED")))
        policy, rule = {"model_safety": True}, "model safety"
    for first, second in (("evaluator", "approver"), ("approver", "evaluator")):
        store, _ = attach(w, good, first)
        store, att = attach(w, bad, second, store)
        r = run(w, tmp_path, store, **policy)
        find(r, rule=rule, attestation=att, key=ident(w, second))


def _failed(w: World, kind: str) -> dict[str, Any]:
    if kind == "test-result":
        return about_model(w, TEST_RESULT_PREDICATE, _tr(result="FAILED"))
    if kind == "vsa":
        return vsa(w, verificationResult="FAILED", verifiedLevels=["FAILED"])
    return about_model(w, SAFETY_PREDICATE, scan(w.files, result="FAILED"))


@pytest.mark.parametrize("kind", ["test-result", "vsa", "scan"])
def test_failed_verdict_by_a_functionary_is_refused_even_when_the_policy_asks_for_none(
        world: World, tmp_path: Path, kind: str) -> None:
    """A functionary's FAILED report about this very model is negative evidence: a policy
    that does not require that kind of evidence does not make it go away (silence never
    outweighs it)."""
    w = world
    store, att = attach(w, _failed(w, kind), "evaluator")
    r = run(w, tmp_path, store)
    find(r, rule="no failed verdict", attestation=att, key=ident(w, "evaluator"))
    assert not r.verified


def test_failed_test_result_by_a_layout_key_outside_the_required_step_is_not_dropped(
        world: World, tmp_path: Path) -> None:
    """The policy requires a test result from evaluate's functionaries and one is PASSED; a
    FAILED one about the same model by another layout key (the approver) is not the
    requirement's candidate, and must not vanish with it: no failed verdict names it."""
    w = world
    store, _ = attach(w, about_model(w, TEST_RESULT_PREDICATE, PASSING_TR), "evaluator")
    store, bad = attach(w, about_model(w, TEST_RESULT_PREDICATE, _tr(result="FAILED")),
                        "approver", store)
    r = run(w, tmp_path, store, required_predicates=TR_REQ)
    find(r, rule="no failed verdict", attestation=bad, key=ident(w, "approver"))
    assert [x.attestation for x in r.refusals].count(bad) == 1  # told once


@pytest.mark.parametrize("kind", ["test-result", "vsa", "scan"])
def test_failed_verdict_about_another_model_or_by_an_outsider_is_not_this_models(
        world: World, tmp_path: Path, kind: str) -> None:
    """The neighbours that must not refuse: the same FAILED report about another model's
    bytes, or signed by no key of the layout (anyone can attach one)."""
    from pipeline_fixtures import make_functionaries

    w = world
    other = copy.deepcopy(_failed(w, kind))
    for sub in other["subject"]:
        sub["digest"] = {"sha256": OTHER}
    store, _ = attach(w, other, "evaluator")
    r = run(w, tmp_path, store)
    assert r.verified, [x.to_dict() for x in r.refusals]
    mallory = make_functionaries(tmp_path, ["mallory"])["mallory"]
    store = MaliciousStore(w.p.store)
    store.add(w.p.digest, sign_statement(_failed(w, kind), mallory.signer))
    r = run(w, tmp_path, store)
    assert r.verified, [x.to_dict() for x in r.refusals]


def test_one_attestation_attached_twice_or_re_signed_counts_once_for_a_threshold(
        world: World, tmp_path: Path) -> None:
    """train needs two signers; the trainer's link attached again, and signed again (another
    signature, another bundle), is still one signer."""
    w = world
    doc = layout_doc(w)
    next(s for s in doc["steps"] if s["name"] == "train")["threshold"] = 2
    store = MaliciousStore(w.p.store)
    store.add(w.p.digest, w.p.bundles["train"], created="2020-01-01T00:00:00Z")
    store.add(w.p.digest, sign_statement(w.statements["train"], signer_of(w, "trainer")))
    r = run(w, tmp_path, store, doc)
    find(r, rule="threshold", step="train")
    out = next(s for s in r.steps if s.name == "train")
    assert out.identities == [ident(w, "trainer")]


# ---- 8. lifecycle records ----------------------------------------------------------------

STAGE = {"required_stage": {"stage": "staging", "step": "approve"}, "check_tag": False}


def _promotion(w: World, *, digest: str | None = None, time: Any = None) -> dict[str, Any]:
    """A first promotion of the model (or of ``digest``) to staging, an hour ago (or at
    ``time``), as a Statement."""
    from modelseal.attest.lifecycle import LifecycleRecord

    st = LifecycleRecord("promote", "staging", w.p.ref.base, w.p.digest, 1, None,
                         at(datetime.now(UTC) - timedelta(hours=1))).statement()
    if digest is not None:
        st["predicate"]["digest"] = digest
        st["subject"][0]["digest"]["sha256"] = digest.partition(":")[2]
    if time is not None:
        st["predicate"]["time"] = time
    return st


def test_lifecycle_promotion_by_the_steps_functionary_is_accepted(world: World,
                                                                  tmp_path: Path) -> None:
    w = world
    store, _ = attach(w, _promotion(w), "approver")
    r = run(w, tmp_path, store, **STAGE)
    assert r.verified, [x.to_dict() for x in r.refusals]


@pytest.mark.parametrize("attack", ["future-time", "unreadable-time", "another-model",
                                    "another-steps-key"])
def test_lifecycle_record_attacks_are_refused(world: World, tmp_path: Path,
                                              attack: str) -> None:
    w = world
    st = {"future-time": lambda: _promotion(w, time=at(AHEAD)),
          "unreadable-time": lambda: _promotion(w, time="tomorrow"),
          "another-model": lambda: _promotion(w, digest="sha256:" + OTHER),
          "another-steps-key": lambda: _promotion(w)}[attack]()
    store, att = attach(w, st, "trainer" if attack == "another-steps-key" else "approver")
    r = run(w, tmp_path, store, **STAGE)
    assert not r.verified
    if attack.endswith("time"):
        find(r, rule="signed time", attestation=att)
    else:
        find(r, rule="lifecycle stage")


def test_lifecycle_promotion_signed_twice_by_one_key_is_one_signer(world: World,
                                                                    tmp_path: Path) -> None:
    """promote:production needs two release managers; the approver's record attached, and
    signed again, is one of them; the packager's signature makes two."""
    w = world
    doc = layout_doc(w)
    keyids = {s["name"]: s["pubkeys"][0] for s in doc["steps"]}
    doc["modelseal"].setdefault("lifecycle", {})["promote:production"] = {
        "pubkeys": [keyids["approve"], keyids["package"]], "threshold": 2}
    st = _promotion(w)
    st["predicate"]["stage"] = "production"
    policy = {"required_stage": "production", "check_tag": False}
    store, _ = attach(w, st, "approver")
    store, _ = attach(w, st, "approver", store)
    r = run(w, tmp_path, store, doc, **policy)
    find(r, rule="lifecycle stage")
    attach(w, st, "release", store)
    r = run(w, tmp_path, store, doc, **policy)
    assert r.verified, [x.to_dict() for x in r.refusals]


# ---- the same through a real registry ----------------------------------------------------


def test_evidence_about_another_model_is_refused_through_a_real_registry(
        registry: Any, tmp_path: Path) -> None:
    """One attack per fixed class against docker-registry: a VSA of another model, a test
    result whose file names carry each other's bytes, an unreadable signed time."""
    w = build_world(tmp_path / "world", registry.host)
    cases = [
        (vsa(w, resourceUri=f"{w.p.ref.base}@sha256:{OTHER}"), "approver",
         {"required_predicates": [VSA_PREDICATE]}, VSA_RULE),
        (statement(_swapped(w), TEST_RESULT_PREDICATE, PASSING_TR), "evaluator",
         {"required_predicates": TR_REQ}, TR_RULE),
        (about_model(w, TEST_RESULT_PREDICATE, _tr(timeVerified="yesterday")), "evaluator",
         {"required_predicates": TR_REQ}, "signed time"),
    ]
    for st, who, policy, rule in cases:
        store, att = attach(w, st, who)
        r = run(w, tmp_path, store, **policy)
        find(r, rule=rule, attestation=att, key=ident(w, who))


@pytest.mark.parametrize("digest,readable", [
    ({"sha256": "not-hex"}, False), ({"sha256": 7}, False), ("sha256:" + "ab" * 32, False),
    ({"sha256": "AB" * 32}, True), ({"sha256": "ab" * 31}, True), ({"md5": "ab" * 16}, True),
    ({}, True)])
@pytest.mark.parametrize("signer", ["trainer", "outsider"])
def test_link_with_a_malformed_digest_is_ignored_never_a_crash(
        world: World, tmp_path: Path, digest: Any, readable: bool, signer: str) -> None:
    """A link whose material digest in-toto cannot read (not hex, not a string, not a
    mapping), signed by the step's functionary or by nobody the layout knows: the verifier
    ignores it, naming it, and never raises (in-toto's FormatError was once a traceback).
    Digests in-toto reads (uppercase hex, another length or algorithm, none) are judged by
    the layout's rules like any other: no crash either way."""
    from attack_world import replace_step
    from pipeline_fixtures import make_functionaries

    w = world
    st = copy.deepcopy(w.statements["train"])
    rds = st["predicate"].get("materials") or st["subject"]
    rds[0]["digest"] = digest
    key = (signer_of(w, "trainer") if signer == "trainer"
           else make_functionaries(tmp_path, ["mallory"])["mallory"].signer)
    store, att = replace_step(w, "train", sign_statement(st, key))
    r = run(w, tmp_path, store)
    if signer == "outsider" or not readable:
        assert not r.verified
        find(r, rule="threshold", step="train")
        assert any(i.attestation == att for i in r.ignored) or any(
            x.attestation == att for x in r.refusals)


def test_provenance_with_a_malformed_digest_is_ignored_never_a_crash(world: World,
                                                                      tmp_path: Path) -> None:
    """The same class through the other road into in-toto's ``Link``: a SLSA provenance for a
    step that takes provenance, signed by that step's functionary, whose subject digest
    in-toto cannot read. It is ignored and named; the step's honest link still counts."""
    from modelseal.attest.statement import provenance_predicate
    from modelseal.formats import LINK_PREDICATE

    w = world
    doc = layout_doc(w)
    doc.setdefault("modelseal", {})["step_predicates"] = {
        "train": [LINK_PREDICATE, SLSA_PROVENANCE_PREDICATE]}
    st = statement(sorted(w.files.items()), SLSA_PROVENANCE_PREDICATE,
                   provenance_predicate(builder_id="https://ci.example/runner"))
    st["subject"][0]["digest"] = {"sha256": "not-hex"}
    store, att = attach(w, st, "trainer")
    r = run(w, tmp_path, store, doc)
    assert any(i.attestation == att for i in r.ignored), [x.to_dict() for x in r.refusals]
