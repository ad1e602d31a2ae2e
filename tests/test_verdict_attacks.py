"""Attacks on the verdict itself (issue 8): the trust decision, the policy and the layout.

One honest pipeline is recorded and pushed to an ``oci:`` image-layout store per module
(``attack_world``); each attack then plays a malicious registry over it
(``malicious_store.MaliciousStore``: added, hidden or swapped referrers) or a careless or
hostile layout, and asserts on the refusal's structure (rule, step, key, attestation,
artifact), never on its wording. The same attacks through a real registry:
``test_verify_attacks.py`` (one per class).
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from attack_world import (
    DSSE_BUNDLE,
    World,
    build_world,
    find,
    ident,
    layout_doc,
    public_of,
    run,
    signer_of,
    step_referrers,
)
from malicious_store import MaliciousStore
from modelseal.attest.bundle import load_trusted_root, sign_statement
from modelseal.attest.statement import statement
from modelseal.cli import main
from modelseal.errors import UsageError, VerificationError
from modelseal.formats import LINK_PREDICATE, TEST_RESULT_PREDICATE, VSA_PREDICATE
from modelseal.intoto_layout.authoring import new_layout
from modelseal.intoto_layout.lint import check_layout
from modelseal.intoto_layout.model import (
    EXTENSION,
    key_dict,
    key_from_dict,
    key_identity,
    sigstore_key,
    verify_layout,
)
from modelseal.oci import open_store
from modelseal.refs import parse_ref
from modelseal.verify.decision import Evidence, ModelView, Verifier
from modelseal.verify.pipeline import verify_model
from modelseal.verify.policy import load_policy
from paths import SIGSTORE
from pipeline_fixtures import (
    FUNCTIONARY,
    STEPS,
    sign_doc,
    write_policy,
)

STAGING_ROOT = SIGSTORE / "staging_trusted_root.json"
GITHUB = "https://token.actions.githubusercontent.com"
BEACON = ("https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
          ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("world")
    yield build_world(tmp, f"oci:{tmp}/registry")


# ---- helpers -----------------------------------------------------------------------------


def with_hint(bundle: bytes, hint: str) -> bytes:
    """The same signed bundle with another (unsigned) key hint."""
    b = json.loads(bundle)
    b["verificationMaterial"]["publicKey"]["hint"] = hint
    b["dsseEnvelope"]["signatures"][0]["keyid"] = hint
    return json.dumps(b).encode()


def about_model(w: World, ptype: str, predicate: dict[str, Any]) -> dict[str, Any]:
    """A Statement about the whole model (every file)."""
    return statement(sorted(w.files.items()), ptype, predicate)


def compressed_pem_key(key: Any) -> dict[str, Any]:
    """The same EC public key as a compressed-point SubjectPublicKeyInfo PEM."""
    from cryptography.hazmat.primitives import serialization as ser

    pk = ser.load_pem_public_key(key.keyval["public"].encode())
    point = pk.public_bytes(ser.Encoding.X962, ser.PublicFormat.CompressedPoint)
    der = bytes.fromhex("3039301306072a8648ce3d020106082a8648ce3d030107032200") + point
    pem = ("-----BEGIN PUBLIC KEY-----\n" + base64.b64encode(der).decode()
           + "\n-----END PUBLIC KEY-----\n")
    return {"keytype": "ecdsa", "scheme": "ecdsa-sha2-nistp256", "keyval": {"public": pem}}


def alias(doc: dict[str, Any], d: dict[str, Any], keyid: str, *steps: str) -> None:
    """List key ``d`` again under ``keyid`` (trusted as the key file says) for ``steps``."""
    doc["keys"][keyid] = dict(copy.deepcopy(d), keyid=keyid)
    for s in doc["steps"]:
        if s["name"] in steps:
            s["pubkeys"].append(keyid)


# ---- 1. one key counted as two ----------------------------------------------------------


def test_verify_refuses_same_key_listed_twice_to_meet_a_threshold(world: World,
                                                                  tmp_path: Path) -> None:
    w = world
    trainer = public_of(w, "trainer")
    doc = layout_doc(w)
    alias(doc, key_dict(trainer), "ab" * 32, "train")
    next(s for s in doc["steps"] if s["name"] == "train")["threshold"] = 2
    assert "duplicate-key" in {f.code for f in check_layout(doc).findings}
    store = MaliciousStore(w.p.store)
    # the trainer signs once more, the bundle naming the alias: two "signatures"
    again = sign_statement(w.statements["train"], signer_of(w, "trainer"))
    store.add(w.p.digest, with_hint(again, "ab" * 32))
    r = run(w, tmp_path, store, doc)
    find(r, rule="threshold", step="train")
    train = next(s for s in r.steps if s.name == "train")
    assert train.identities == [ident(w, "trainer")] and not train.passed


def test_verify_refuses_same_key_in_another_encoding_to_meet_a_threshold(
        world: World, tmp_path: Path) -> None:
    w = world
    doc = layout_doc(w)
    compressed = compressed_pem_key(public_of(w, "trainer"))
    kid = key_from_dict("00" * 32, compressed).keyid  # the id its own key file would claim
    alias(doc, compressed, kid, "train")
    next(s for s in doc["steps"] if s["name"] == "train")["threshold"] = 2
    assert key_identity(compressed) == ident(w, "trainer")
    store = MaliciousStore(w.p.store)
    store.add(w.p.digest, with_hint(sign_statement(w.statements["train"],
                                                   signer_of(w, "trainer")), kid))
    find(run(w, tmp_path, store, doc), rule="threshold", step="train")


def test_verify_refuses_one_key_under_two_ids_signing_separated_steps(world: World,
                                                                       tmp_path: Path) -> None:
    """The layout separates train and approve; the trainer's key is also listed, under
    another key id, as an approver. The bundle's hint picks the alias: it chooses nothing."""
    w = world
    doc = layout_doc(w)
    alias(doc, key_dict(public_of(w, "trainer")), "cd" * 32, "approve")
    store = MaliciousStore(w.p.store)
    for d in step_referrers(w, "approve"):
        store.hide(d)
    store.add(w.p.digest, with_hint(sign_statement(w.statements["approve"],
                                                   signer_of(w, "trainer")), "cd" * 32))
    r = run(w, tmp_path, store, doc)
    x = find(r, rule="distinct signers train/approve", key=ident(w, "trainer"))
    assert "trainer" in x.message  # named as the functionary, not only by key id
    # the policy's distinct_signers counts material too (the layout without its own rule)
    doc2 = copy.deepcopy(doc)
    doc2[EXTENSION]["separation_of_duties"] = []
    assert run(w, tmp_path, store, doc2).verified
    r = run(w, tmp_path, store, doc2, distinct_signers=[["train", "approve"]])
    find(r, rule="distinct signers train/approve", key=ident(w, "trainer"))


def test_bundle_hint_naming_an_authorized_key_does_not_authorize(world: World,
                                                                 tmp_path: Path) -> None:
    w = world
    store = MaliciousStore(w.p.store)
    for d in step_referrers(w, "approve"):
        store.hide(d)
    approver = public_of(w, "approver").keyid
    store.add(w.p.digest, with_hint(sign_statement(w.statements["approve"],
                                                   signer_of(w, "evaluator")), approver))
    r = run(w, tmp_path, store)
    find(r, rule="threshold", step="approve")
    find(r, rule="authorized functionaries", step="approve", key=ident(w, "evaluator"))


def test_layout_check_and_sign_refuse_duplicate_key_material(world: World,
                                                             tmp_path: Path) -> None:
    w = world
    doc = layout_doc(w)
    alias(doc, key_dict(public_of(w, "trainer")), "ef" * 32, "evaluate")
    (tmp_path / "dup.json").write_text(json.dumps(doc))
    runner = CliRunner()
    res = runner.invoke(main, ["layout", "check", str(tmp_path / "dup.json"), "--json"])
    assert res.exit_code == 1
    assert "duplicate-key" in {f["code"] for f in json.loads(res.output)["findings"]}
    key = w.p.owner.key_path.with_suffix(".key")
    res = runner.invoke(main, ["layout", "sign", str(tmp_path / "dup.json"), "--key", str(key)])
    assert res.exit_code == 2, res.output
    assert "signatures" not in json.loads((tmp_path / "dup.json").read_text())


def test_layout_check_reports_a_keyless_identity_listed_twice(world: World) -> None:
    w = world
    doc = layout_doc(w)
    ci = sigstore_key("https://github.com/acme/m/.github/workflows/t.yml@refs/heads/main")
    for kid, step in (("11" * 32, "train"), ("22" * 32, "evaluate")):
        alias(doc, key_dict(ci), kid, step)
    f = [x for x in check_layout(doc).findings if x.code == "duplicate-key"]
    assert len(f) == 1 and f[0].level == "error"


def test_policy_listing_one_owner_key_twice_is_a_usage_error(world: World,
                                                             tmp_path: Path) -> None:
    w = world
    pub = w.p.owner.key_path.with_suffix(".pub")
    as_json = tmp_path / "owner.json"
    d = key_dict(public_of(w, "owner"))
    d["keyid"] = "99" * 32  # a key file may claim any key id
    as_json.write_text(json.dumps(d))
    pol = write_policy(tmp_path / "p.yaml", str(w.p.layout_path), [pub, as_json])
    with pytest.raises(UsageError):
        load_policy(pol)


# ---- 2. FAILED counts as evidence -------------------------------------------------------


@pytest.mark.parametrize("predicate", [
    {"result": "FAILED", "failedTests": ["accuracy>=0.9"]},
    {"result": "PASSED", "metrics": {"accuracy": 0.5},
     "thresholds": [{"metric": "accuracy", "op": ">=", "value": 0.9}]},
    {"result": "PASSED", "failedTests": ["accuracy>=0.9"]},
], ids=["failed", "passed-but-misses-its-thresholds", "passed-but-lists-failed-tests"])
def test_failed_test_result_does_not_satisfy_a_required_test_result(
        world: World, tmp_path: Path, predicate: dict[str, Any]) -> None:
    w = world
    store = MaliciousStore(w.p.store)
    att = store.add(w.p.digest, sign_statement(about_model(w, TEST_RESULT_PREDICATE, predicate),
                                               signer_of(w, "evaluator")))
    req = [{"type": TEST_RESULT_PREDICATE, "step": "evaluate"}]
    r = run(w, tmp_path, store, required_predicates=req)
    find(r, step="evaluate", attestation=att, key=ident(w, "evaluator"),
         rule=f"required predicate {TEST_RESULT_PREDICATE} (signed for step evaluate)")


def test_failed_vsa_does_not_satisfy_a_policy_requiring_a_vsa(world: World,
                                                              tmp_path: Path) -> None:
    w = world
    store = MaliciousStore(w.p.store)
    vsa = statement([("model", w.p.digest)], VSA_PREDICATE, {"verificationResult": "FAILED"})
    att = store.add(w.p.digest, sign_statement(vsa, signer_of(w, "approver")))
    r = run(w, tmp_path, store, required_predicates=[VSA_PREDICATE])
    find(r, rule=f"required predicate {VSA_PREDICATE}", attestation=att)
    ok = statement([("model", w.p.digest)], VSA_PREDICATE, {"verificationResult": "PASSED"})
    store2 = MaliciousStore(w.p.store)
    store2.add(w.p.digest, sign_statement(ok, signer_of(w, "approver")))
    assert run(w, tmp_path, store2, required_predicates=[VSA_PREDICATE]).verified


def _link_with_rc(w: World, step: str, rc: Any) -> dict[str, Any]:
    st = copy.deepcopy(w.statements[step])
    st["predicate"]["byproducts"]["return-value"] = rc
    return st


@pytest.mark.parametrize("rc", [1, -9, "0", True])
def test_link_of_a_failed_command_is_not_the_step_done(world: World, tmp_path: Path,
                                                       rc: Any) -> None:
    w = world
    store = MaliciousStore(w.p.store)
    for d in step_referrers(w, "approve"):
        store.hide(d)
    att = store.add(w.p.digest, sign_statement(_link_with_rc(w, "approve", rc),
                                               signer_of(w, "approver")))
    r = run(w, tmp_path, store)
    find(r, rule="threshold", step="approve")
    find(r, rule="return value", step="approve", attestation=att, key=ident(w, "approver"))


def test_layout_may_declare_other_return_values_as_done(world: World, tmp_path: Path) -> None:
    w = world
    store = MaliciousStore(w.p.store)
    for d in step_referrers(w, "approve"):
        store.hide(d)
    store.add(w.p.digest, sign_statement(_link_with_rc(w, "approve", 3),
                                         signer_of(w, "approver")))
    doc = layout_doc(w)
    doc[EXTENSION]["return_values"] = {"approve": [0, 3]}
    assert run(w, tmp_path, store, doc).verified


def test_verify_attach_does_not_publish_a_failed_vsa(world: World, tmp_path: Path) -> None:
    from modelseal.attest.attachments import list_attestations

    p = world.p
    pol = write_policy(tmp_path / "policy.yaml", str(p.layout_path),
                       p.owner.key_path.with_suffix(".pub"),
                       required_predicates=["https://cyclonedx.org/bom"])  # nobody attached one
    key = p.functionaries["approver"].key_path.with_suffix(".key")
    res = CliRunner().invoke(main, ["verify", str(p.ref), "--policy", str(pol),
                                    "--vsa-signer", str(key), "--attach", "--json",
                                    "--vsa-output", str(tmp_path / "vsa.json")])
    assert res.exit_code == 10, res.output
    assert json.loads(res.output)["vsa"] is None
    assert list_attestations(p.store, p.digest, predicate_type=VSA_PREDICATE) == []
    kept = json.loads(base64.b64decode(json.loads((tmp_path / "vsa.json").read_bytes())
                                       ["dsseEnvelope"]["payload"]))
    assert kept["predicate"]["verificationResult"] == "FAILED"


# ---- 3. time ----------------------------------------------------------------------------


def test_signed_time_years_ahead_is_refused(world: World, tmp_path: Path) -> None:
    w = world
    store = MaliciousStore(w.p.store)
    ahead = (datetime.now(UTC) + timedelta(days=3 * 365)).strftime("%Y-%m-%dT%H:%M:%SZ")
    st = about_model(w, TEST_RESULT_PREDICATE, {"result": "PASSED", "timeVerified": ahead})
    att = store.add(w.p.digest, sign_statement(st, signer_of(w, "evaluator")))
    r = run(w, tmp_path, store,
            required_predicates=[{"type": TEST_RESULT_PREDICATE, "step": "evaluate"}],
            max_attestation_age="90d")
    find(r, rule="signed time", attestation=att, key=ident(w, "evaluator"))
    # a provenance finished years ahead, for a step the layout evidences by provenance
    prov = statement(sorted(w.files.items()), "https://slsa.dev/provenance/v1",
                     {"buildDefinition": {}, "runDetails": {"metadata": {"finishedOn": ahead}}})
    store2 = MaliciousStore(w.p.store)
    att2 = store2.add(w.p.digest, sign_statement(prov, signer_of(w, "release")))
    r = run(w, tmp_path, store2, required_predicates=["https://slsa.dev/provenance/v1"])
    find(r, rule="signed time", attestation=att2)


def test_signed_time_within_the_clock_skew_is_accepted(world: World, tmp_path: Path) -> None:
    w = world
    store = MaliciousStore(w.p.store)
    soon = (datetime.now(UTC) + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    st = about_model(w, TEST_RESULT_PREDICATE, {"result": "PASSED", "timeVerified": soon})
    store.add(w.p.digest, sign_statement(st, signer_of(w, "evaluator")))
    r = run(w, tmp_path, store,
            required_predicates=[{"type": TEST_RESULT_PREDICATE, "step": "evaluate"}])
    assert r.verified, [x.to_dict() for x in r.refusals]


def test_registry_created_annotation_proves_no_age(world: World, tmp_path: Path) -> None:
    """An old link re-listed with a fresh (unsigned) created annotation stays unjudgeable."""
    w = world
    store = MaliciousStore(w.p.store)
    for d in step_referrers(w, "train"):
        store.hide(d)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    store.add(w.p.digest, w.p.bundles["train"], created=now)
    r = run(w, tmp_path, store, max_attestation_age="30d")
    find(r, rule="max attestation age 30 days, 0:00:00", step=None)
    # a signed time 60 days old is judged, however fresh the registry says it is
    old = (datetime.now(UTC) - timedelta(days=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
    st = about_model(w, TEST_RESULT_PREDICATE, {"result": "PASSED", "timeVerified": old})
    att = store.add(w.p.digest, sign_statement(st, signer_of(w, "evaluator")), created=now)
    r = run(w, tmp_path, store, max_attestation_age="30d",
            required_predicates=[{"type": TEST_RESULT_PREDICATE, "step": "evaluate"}])
    find(r, rule="max attestation age 30 days, 0:00:00", attestation=att)


# ---- 4. evidence about another model ----------------------------------------------------


def test_evaluation_of_part_of_the_model_does_not_count(world: World, tmp_path: Path) -> None:
    """v2 = v1 + a file: v1's evaluation names only files v2 also has, and covers not all."""
    w = world
    store = MaliciousStore(w.p.store)
    part = statement([("weights.bin", w.files["weights.bin"])], TEST_RESULT_PREDICATE,
                     {"result": "PASSED"})
    att = store.add(w.p.digest, sign_statement(part, signer_of(w, "evaluator")))
    req = [{"type": TEST_RESULT_PREDICATE, "step": "evaluate"}]
    r = run(w, tmp_path, store, required_predicates=req)
    find(r, attestation=att, artifact="config.json", step="evaluate")
    # about the manifest digest: covers the model
    store2 = MaliciousStore(w.p.store)
    whole = statement([("model", w.p.digest)], TEST_RESULT_PREDICATE, {"result": "PASSED"})
    store2.add(w.p.digest, sign_statement(whole, signer_of(w, "evaluator")))
    assert run(w, tmp_path, store2, required_predicates=req).verified


# ---- 5. one functionary's evidence cancels another's ------------------------------------


def test_passing_evidence_does_not_cancel_failing_evidence(world: World, tmp_path: Path) -> None:
    w = world
    store = MaliciousStore(w.p.store)
    bad = store.add(w.p.digest, sign_statement(
        about_model(w, TEST_RESULT_PREDICATE, {"result": "FAILED"}), signer_of(w, "evaluator")))
    store.add(w.p.digest, sign_statement(
        about_model(w, TEST_RESULT_PREDICATE, {"result": "PASSED"}), signer_of(w, "trainer")))
    store.add(w.p.digest, sign_statement(
        about_model(w, TEST_RESULT_PREDICATE, {"result": "PASSED"}), signer_of(w, "evaluator")))
    r = run(w, tmp_path, store, required_predicates=[TEST_RESULT_PREDICATE])
    rule = f"required predicate {TEST_RESULT_PREDICATE}"
    find(r, attestation=bad, key=ident(w, "evaluator"), rule=rule)
    assert {x.rule for x in r.refusals} == {rule}
    assert {x.attestation for x in r.refusals} == {bad, None}  # and the contradiction named


def test_passing_scan_does_not_cancel_the_packagers_failing_scan(world: World,
                                                                 tmp_path: Path) -> None:
    """Class 5 for model safety: a scan signed by another layout key saying every file is
    safe does not outweigh the packager's scan that finds an unsafe file; nor does a scan
    that leaves a file out count for it."""
    from modelseal.formats import SAFETY_PREDICATE

    w = world

    def scan(verdict: str, files: dict[str, str]) -> dict[str, Any]:
        return {"result": "PASSED" if verdict == "safe" else "FAILED",
                "files": [{"path": p, "digest": {"sha256": d}, "format": "pickle",
                           "verdict": verdict, "codeExecuting": True, "findings": []}
                          for p, d in sorted(files.items())]}

    store = MaliciousStore(w.p.store)
    bad = store.add(w.p.digest, sign_statement(about_model(
        w, SAFETY_PREDICATE, scan("unsafe", w.files)), signer_of(w, "release")))
    store.add(w.p.digest, sign_statement(about_model(
        w, SAFETY_PREDICATE, scan("safe", w.files)), signer_of(w, "trainer")))
    r = run(w, tmp_path, store, model_safety=True)
    find(r, rule="model safety", attestation=bad, key=ident(w, "release"))
    assert not r.verified
    partial = dict(sorted(w.files.items())[1:])
    store = MaliciousStore(w.p.store)
    short = store.add(w.p.digest, sign_statement(about_model(
        w, SAFETY_PREDICATE, scan("safe", partial)), signer_of(w, "release")))
    r = run(w, tmp_path, store, model_safety=True)
    find(r, rule="model safety", attestation=short, artifact=sorted(w.files)[0])


@pytest.mark.parametrize("result", ["FAILED", "ERROR", None, True],
                         ids=["failed", "error", "missing", "not-a-string"])
def test_scan_that_does_not_say_it_passed_counts_for_nothing(world: World, tmp_path: Path,
                                                             result: Any) -> None:
    """Class 2 for model safety: every file entry says ``safe`` but the scan's own result is
    FAILED (a scanner that crashed midway, a hand-made predicate), something else, or absent:
    the scan does not say it passed, so the policy's model-safety requirement is not met."""
    from modelseal.formats import SAFETY_PREDICATE

    w = world
    pred: dict[str, Any] = {"files": [
        {"path": p, "digest": {"sha256": d}, "format": "safetensors", "verdict": "safe",
         "codeExecuting": False, "findings": []} for p, d in sorted(w.files.items())]}
    if result is not None:
        pred["result"] = result
    store = MaliciousStore(w.p.store)
    bad = store.add(w.p.digest, sign_statement(about_model(w, SAFETY_PREDICATE, pred),
                                               signer_of(w, "release")))
    r = run(w, tmp_path, store, model_safety=True)
    find(r, rule="model safety", attestation=bad, key=ident(w, "release"))
    assert not r.verified
    pred["result"] = "PASSED"  # the same scan saying PASSED is accepted: the test is fair
    store = MaliciousStore(w.p.store)
    store.add(w.p.digest, sign_statement(about_model(w, SAFETY_PREDICATE, pred),
                                         signer_of(w, "release")))
    r = run(w, tmp_path, store, model_safety=True)
    assert not [x for x in r.refusals if x.rule == "model safety"], r.refusals


# ---- 10. the trust root is given, never sniffed -----------------------------------------


def _keyless_layout(w: World) -> dict[str, Any]:
    tpl = {"_type": "layout", "expires": "2000-01-01T00:00:00Z", "readme": "keyless",
           "keys": {}, "inspect": [],
           "steps": [{"_type": "step", "name": "build", "pubkeys": [], "threshold": 1,
                      "expected_command": [], "expected_materials": [["ALLOW", "*"]],
                      "expected_products": [["CREATE", "*"], ["DISALLOW", "*"]]}],
           "modelseal": {"step_predicates": {"build": [LINK_PREDICATE,
                                                       "https://slsa.dev/provenance/v1"]}}}
    return new_layout(tpl, [("build", sigstore_key(BEACON))])


def _respelled_bundle() -> bytes:
    """The real staging bundle, its JSON keys spelt with escapes: same document, no
    ``"certificate"`` substring in its bytes."""
    text = json.dumps(json.loads((SIGSTORE / DSSE_BUNDLE).read_bytes()))
    return text.replace('"certificate"', '"\\u0063ertificate"').encode()


@pytest.mark.parametrize("root,verified", [(str(STAGING_ROOT), True), ("production", False)],
                         ids=["pinned-staging-root", "production-root"])
def test_respelled_keyless_bundle_is_checked_against_the_policys_root(
        world: World, tmp_path: Path, root: str, verified: bool) -> None:
    w = world
    assert b'"certificate"' not in _respelled_bundle()
    store = MaliciousStore(open_store(w.keyless_ref))
    store.add(w.keyless_digest, _respelled_bundle())
    layout = tmp_path / "keyless.json"
    layout.write_bytes(sign_doc(_keyless_layout(w), w.p.owner.signer))
    pol = write_policy(tmp_path / "p.yaml", str(layout), w.p.owner.key_path.with_suffix(".pub"),
                       trusted_root=root)
    r = verify_model(store, w.keyless_ref, load_policy(pol))
    # (this model's a.txt is not the file the bundle speaks of: only the signature is judged)
    counted = r.steps[0].identities == [f"sigstore:{GITHUB} {BEACON}"]
    assert counted is verified, [x.to_dict() for x in r.refusals]
    if not verified:
        find(r, rule="signature", step="build")


def test_decision_given_no_trusted_root_picks_no_default(world: World) -> None:
    w = world
    bundle = (SIGSTORE / DSSE_BUNDLE).read_bytes()
    st = json.loads(base64.b64decode(json.loads(bundle)["dsseEnvelope"]["payload"]))
    subj = st["subject"][0]
    model = ModelView("sha256:" + "1" * 64, {subj["name"]: "sha256:" + subj["digest"]["sha256"]})
    owner = public_of(w, "owner")
    layout = sign_doc(_keyless_layout(w), w.p.owner.signer)
    evidence = [Evidence("sha256:" + "2" * 64, bundle)]
    r = Verifier(layout, {owner.keyid: owner}).verify(model, evidence)
    find(r, rule="trusted root", step="build")
    r = Verifier(layout, {owner.keyid: owner},
                 trusted_root=load_trusted_root(str(STAGING_ROOT))).verify(model, evidence)
    assert r.verified, [x.to_dict() for x in r.refusals]


# ---- policy and layout ------------------------------------------------------------------


@pytest.mark.parametrize("policy,typo", [
    ({"distinct_signers": [["train", "aprove"]]}, "aprove"),
    ({"final_step": "pakage"}, "pakage"),
    ({"required_predicates": [{"type": TEST_RESULT_PREDICATE, "step": "evalute"}]}, "evalute"),
    ({"required_stage": {"stage": "production", "step": "aprove"}}, "aprove"),
])
def test_policy_naming_a_step_the_layout_lacks_is_a_usage_error(
        world: World, tmp_path: Path, policy: dict[str, Any], typo: str) -> None:
    w = world
    with pytest.raises(UsageError) as e:
        run(w, tmp_path, **policy)
    assert e.value.exit_code == 2 and repr(typo) in e.value.message
    res = CliRunner().invoke(main, ["verify", str(w.p.ref), "--policy",
                                    str(tmp_path / "policy.yaml")])
    assert res.exit_code == 2 and typo in res.output


def test_layout_separation_of_duties_over_a_missing_step_is_not_vacuous(
        world: World, tmp_path: Path) -> None:
    w = world
    doc = layout_doc(w)
    doc[EXTENSION]["separation_of_duties"] = [["train", "aprove"]]
    r = run(w, tmp_path, doc=doc)
    find(r, rule="distinct signers train/aprove", step="aprove")


def test_ci_retry_with_a_failed_first_attempt_still_verifies(world: World,
                                                             tmp_path: Path) -> None:
    """A retried step: the failed attempt's link (return value 1, partial products) stays
    attached next to the passing one, and the same link is also signed twice."""
    w = world
    store = MaliciousStore(w.p.store)
    failed = _link_with_rc(w, "train", 1)
    failed["subject"] = failed["subject"][:1]
    store.add(w.p.digest, sign_statement(failed, signer_of(w, "trainer")))
    store.add(w.p.digest, sign_statement(w.statements["train"], signer_of(w, "trainer")))
    r = run(w, tmp_path, store)
    assert r.verified, [x.to_dict() for x in r.refusals]
    train = next(s for s in r.steps if s.name == "train")
    assert train.identities == [ident(w, "trainer")] and len(train.attestations) == 2


def test_two_passing_links_with_different_products_are_refused(world: World,
                                                               tmp_path: Path) -> None:
    w = world
    store = MaliciousStore(w.p.store)
    other = copy.deepcopy(w.statements["train"])
    other["subject"][0]["digest"]["sha256"] = "ab" * 32
    att = store.add(w.p.digest, sign_statement(other, signer_of(w, "trainer")))
    r = run(w, tmp_path, store)
    find(r, rule="one link per functionary", step="train", attestation=att)


def test_layout_sign_refuses_what_layout_check_rejects(world: World, tmp_path: Path) -> None:
    w = world
    doc = layout_doc(w)
    doc["steps"][1]["expected_materials"] = [["MATCH", "data/*", "WITH", "PRODUCTS", "FROM",
                                              "prepare-data"]]  # no DISALLOW after it
    path = tmp_path / "l.json"
    path.write_text(json.dumps(doc))
    key = str(w.p.owner.key_path.with_suffix(".key"))
    res = CliRunner().invoke(main, ["layout", "sign", str(path), "--key", key])
    assert res.exit_code == 2 and "match-without-disallow" in res.output
    assert json.loads(path.read_text()) == doc


def test_layout_new_refuses_an_expiry_that_is_not_in_the_future(world: World) -> None:
    w = world
    spec = [f"{s}={w.p.functionaries[FUNCTIONARY[s]].key_path.with_suffix('.pub')}"
            for s in STEPS]
    args = ["layout", "new", "-t", "ml-pipeline", "--expires", "0d"]
    for f in spec:
        args += ["-f", f]
    assert CliRunner().invoke(main, args).exit_code == 2
    args[args.index("0d")] = "90d"
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0
    names = json.loads(res.output)[EXTENSION]["functionaries"]
    assert sorted(names.values()) == sorted(FUNCTIONARY.values())


def test_layout_push_refuses_an_unsigned_layout(world: World, tmp_path: Path) -> None:
    w = world
    path = tmp_path / "unsigned.json"
    path.write_text(json.dumps(layout_doc(w)))
    res = CliRunner().invoke(main, ["layout", "push", str(path),
                                    f"{w.p.registry_host}/layouts/x:v1"])
    assert res.exit_code == 2, res.output
    assert MaliciousStore(open_store(parse_ref(f"{w.p.registry_host}/layouts/x:v1"))
                          ).inner.list_tags() == []


def test_unsigned_layout_is_refused_with_a_reason(world: World, tmp_path: Path) -> None:
    w = world
    owner = public_of(w, "owner")
    with pytest.raises(VerificationError) as e:
        verify_layout(json.dumps(layout_doc(w)).encode(), {owner.keyid: owner})
    assert e.value.reasons and all(r.strip().rstrip(":") != "layout signature"
                                   for r in e.value.reasons)
    layout = tmp_path / "l.json"
    layout.write_text(json.dumps(layout_doc(w)))
    pol = write_policy(tmp_path / "p.yaml", str(layout), w.p.owner.key_path.with_suffix(".pub"))
    r = verify_model(MaliciousStore(w.p.store), w.p.ref, load_policy(pol))
    x = find(r, rule="layout signature")
    assert x.message.split(":", 1)[1].strip()


def test_refusals_and_steps_name_functionaries(world: World, tmp_path: Path) -> None:
    w = world
    store = MaliciousStore(w.p.store)
    for d in step_referrers(w, "approve"):
        store.hide(d)
    r = run(w, tmp_path, store)
    x = find(r, rule="threshold", step="approve")
    assert "approver" in x.message
    assert [s.signers[0].split(" ")[0] for s in r.steps if s.signers] == [
        FUNCTIONARY[s] for s in STEPS if s != "approve"]
    res = CliRunner().invoke(main, ["verify", str(w.p.ref), "--policy",
                                    str(tmp_path / "policy.yaml")])
    assert res.exit_code == 0 and all(n in res.output for n in FUNCTIONARY.values()), res.output


def test_swapped_referrer_content_counts_for_nothing_and_no_weight_is_fetched(
        world: World, tmp_path: Path) -> None:
    """The registry serves other bytes for the approve attestation: garbage, then another
    step's (validly signed) link. Neither counts for approve; deciding reads no weights."""
    w = world
    store = MaliciousStore(w.p.store)
    approve = [d for d in store.referrers(w.p.digest)
               if d.digest in step_referrers(w, "approve")]
    bundle = approve[0].annotations["dev.modelseal.referrer.blob"]
    store.swap(bundle, b"\x00not a bundle")
    r = run(w, tmp_path, store)
    find(r, rule="threshold", step="approve")
    assert approve[0].digest in {i.attestation for i in r.ignored}  # named, not a crash
    store.swap(bundle, w.p.bundles["evaluate"])  # a copy of another step's evidence
    r = run(w, tmp_path, store)
    find(r, rule="threshold", step="approve")
    assert next(s for s in r.steps if s.name == "evaluate").passed
    assert not {"sha256:" + d for d in w.files.values()} & store.blobs_fetched
