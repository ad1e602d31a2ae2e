"""Attacks on a model's supply chain played against a real registry (docker-registry): the
integration tests, one per class of attack. The honest pipeline is pushed once per module and
most attacks lie through a ``MaliciousStore`` over it; the attacks that change the registry
itself (a blob altered in its storage, a tag moved by a push, a referrer deleted) get a
pipeline each. Every variant runs in milliseconds on an image layout in
``test_attacks_store.py`` and ``test_verdict_attacks.py``."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from attack_world import (
    DSSE_BUNDLE,
    World,
    build_world,
    find,
    ident,
    layout_doc,
    public_of,
    replace_step,
    run,
    signer_of,
    step_referrers,
)
from malicious_store import MaliciousStore
from modelseal.attest.bundle import load_trusted_root, sign_statement
from modelseal.attest.statement import statement
from modelseal.errors import DigestMismatchError
from modelseal.formats import (
    BOM_PREDICATE,
    LINK_PREDICATE,
    SLSA_PROVENANCE_PREDICATE,
    TEST_RESULT_PREDICATE,
)
from modelseal.intoto_layout.authoring import load_template
from modelseal.intoto_layout.model import sigstore_key
from modelseal.modelpack import ModelMetadata
from modelseal.oci.referrers import fallback_tag
from modelseal.transfer import push
from modelseal.verify.decision import Evidence, ModelView, Verifier
from modelseal.verify.pipeline import pull_verified, verify_model
from modelseal.verify.policy import load_policy
from modelseal.verify.result import VerificationResult
from paths import SIGSTORE, running
from pipeline_fixtures import (
    FUNCTIONARY,
    STEPS,
    Pipeline,
    build_layout,
    honest_pipeline,
    make_functionaries,
    publish,
)
from registry_server import REGISTRY_BIN, RegistryServer, blob_path

BEACON = ("https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
          ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main")
GITHUB = "https://token.actions.githubusercontent.com"


def verify(p: Pipeline) -> VerificationResult:
    return verify_model(p.store, p.ref, load_policy(p.policy_path))


def refused(result: VerificationResult, *needles: str) -> str:
    """Assert refusal and that one message contains every needle; that message (for the
    keyless checks, whose refusals name identities only in their text)."""
    assert not result.verified, "expected a refusal"
    if os.environ.get("SHOW_REFUSALS"):
        print("\n".join(r.message for r in result.refusals))
    for r in result.refusals:
        if all(n in r.message for n in needles):
            return r.message
    raise AssertionError(f"no refusal mentions {needles}: {[r.message for r in result.refusals]}")


# ---------------------------------------------------------------------------------------------
# the honest pipeline on a real registry, once: attacks that only lie through a MaliciousStore


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    for server in running(lambda: RegistryServer(tmp_path_factory.mktemp("registry")),
                          REGISTRY_BIN):
        yield build_world(tmp_path_factory.mktemp("world"), server.host)


def test_honest_pipeline_verifies_and_pulls(world: World, tmp_path: Path) -> None:
    p = world.p
    r = run(world, tmp_path, distinct_signers=[["train", "approve"]])
    assert r.verified, [x.to_dict() for x in r.refusals]
    assert [s.name for s in r.steps if s.passed] == list(STEPS)
    assert [s.signers[0].split(" ")[0] for s in r.steps] == [FUNCTIONARY[s] for s in STEPS]
    result, pulled = pull_verified(p.store, p.ref, tmp_path / "out", load_policy(p.policy_path))
    assert result.verified and pulled.digest == p.digest
    assert (tmp_path / "out" / "weights.bin").read_bytes() == (
        p.model_dir / "weights.bin").read_bytes()


def _failed_result(w: World) -> tuple[MaliciousStore, dict[str, Any]]:
    store = MaliciousStore(w.p.store)
    store.add(w.p.digest, sign_statement(statement(
        sorted(w.files.items()), TEST_RESULT_PREDICATE, {"result": "FAILED"}),
        signer_of(w, "evaluator")))
    return store, {"required_predicates": [TEST_RESULT_PREDICATE]}


def _future_time(w: World) -> tuple[MaliciousStore, dict[str, Any]]:
    store = MaliciousStore(w.p.store)
    ahead = (datetime.now(UTC) + timedelta(days=3 * 365)).strftime("%Y-%m-%dT%H:%M:%SZ")
    store.add(w.p.digest, sign_statement(statement(
        sorted(w.files.items()), TEST_RESULT_PREDICATE,
        {"result": "PASSED", "timeVerified": ahead}), signer_of(w, "evaluator")))
    return store, {"required_predicates": [TEST_RESULT_PREDICATE]}


def _contradicting(w: World) -> tuple[MaliciousStore, dict[str, Any]]:
    store, policy = _failed_result(w)
    store.add(w.p.digest, sign_statement(statement(
        sorted(w.files.items()), TEST_RESULT_PREDICATE, {"result": "PASSED"}),
        signer_of(w, "trainer")))
    return store, policy


def _another_model(w: World) -> tuple[MaliciousStore, dict[str, Any]]:
    store = MaliciousStore(w.p.store)
    bom = statement([("weights.bin", "cd" * 32)], BOM_PREDICATE,
                    {"bomFormat": "CycloneDX", "specVersion": "1.6"})
    store.add(w.p.digest, sign_statement(bom, signer_of(w, "release")))
    return store, {"required_predicates": [BOM_PREDICATE]}


def _hidden(w: World) -> tuple[MaliciousStore, dict[str, Any]]:
    store = MaliciousStore(w.p.store)
    for d in step_referrers(w, "approve"):
        store.hide(d)
    return store, {}


def _wrong_key(w: World) -> tuple[MaliciousStore, dict[str, Any]]:
    return replace_step(w, "train", sign_statement(w.statements["train"],
                                                   signer_of(w, "evaluator")))[0], {}


@pytest.mark.parametrize("attack,rule,step", [
    (_wrong_key, "authorized functionaries", "train"),
    (_failed_result, f"required predicate {TEST_RESULT_PREDICATE}", None),
    (_future_time, "signed time", None),
    (_contradicting, f"required predicate {TEST_RESULT_PREDICATE}", None),
    (_another_model, f"required predicate {BOM_PREDICATE}", None),
    (_hidden, "threshold", "approve"),
], ids=["wrong-key", "failed-result", "future-time", "contradicting-evidence",
        "evidence-about-another-model", "hidden-attestation"])
def test_attack_through_a_real_registry_is_refused(
        world: World, tmp_path: Path, attack: Callable[[World], tuple[MaliciousStore,
                                                                      dict[str, Any]]],
        rule: str, step: str | None) -> None:
    """One real-registry test per class (test_attacks_store.py and test_verdict_attacks.py
    play every variant on an image layout)."""
    store, policy = attack(world)
    find(run(world, tmp_path, store, **policy), rule=rule, step=step)


def test_same_key_under_another_id_through_a_real_registry(world: World,
                                                           tmp_path: Path) -> None:
    w = world
    store, _ = replace_step(w, "approve", sign_statement(w.statements["approve"],
                                                         signer_of(w, "trainer")))
    doc = layout_doc(w, approve=[public_of(w, "trainer")])
    find(run(w, tmp_path, store, doc), rule="distinct signers train/approve",
         key=ident(w, "trainer"))


def test_hostile_referrer_and_stale_index_through_a_real_registry(world: World,
                                                                  tmp_path: Path) -> None:
    store = MaliciousStore(world.p.store)
    junk = store.add(world.p.digest, b"\x00not a bundle")
    store.serve(fallback_tag(world.p.digest), world.stale_index)
    r = run(world, tmp_path, store)
    assert r.verified, [x.to_dict() for x in r.refusals]
    assert junk in {i.attestation for i in r.ignored}


# ---------------------------------------------------------------------------------------------
# attacks that change the registry itself: a pipeline each


def test_blob_altered_in_registry_storage_is_refused_at_pull(tmp_path: Path,
                                                             registry: RegistryServer) -> None:
    p = honest_pipeline(tmp_path, registry.host)
    weights = p.model_dir / "weights.bin"
    digest = "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()
    data = blob_path(registry.storage_dir, digest)
    data.write_bytes(b"\x00" * len(weights.read_bytes()))  # same size, other content
    # metadata is unchanged, so the decision passes without downloading the weights ...
    assert verify(p).verified
    # ... and the pull that follows checks every blob and writes nothing
    target = tmp_path / "deploy"
    with pytest.raises(DigestMismatchError):
        pull_verified(p.store, p.ref, target, load_policy(p.policy_path))
    assert not target.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("keep")
    with pytest.raises(DigestMismatchError):
        pull_verified(p.store, p.ref, existing, load_policy(p.policy_path), overwrite=True)
    assert sorted(x.name for x in existing.iterdir()) == ["keep.txt"]


def test_tag_moved_to_unattested_digest(tmp_path: Path, registry: RegistryServer) -> None:
    p = honest_pipeline(tmp_path, registry.host)
    (p.model_dir / "weights.bin").write_bytes(b"backdoored weights")
    moved = push(p.model_dir, p.store, p.ref, ModelMetadata({"name": "tiny"}), allow_retag=True)
    assert moved.digest != p.digest
    r = verify(p)
    assert r.subject == moved.digest
    assert {x.step for x in r.refusals if x.rule == "threshold"} == set(STEPS)


def test_deleted_attestation(tmp_path: Path, registry: RegistryServer) -> None:
    p = honest_pipeline(tmp_path, registry.host)
    r0 = verify(p)
    approve = next(s for s in r0.steps if s.name == "approve").attestations[0]
    p.store.delete_manifest(approve)  # type: ignore[attr-defined]
    find(verify(p), rule="threshold", step="approve")


# ---------------------------------------------------------------------------------------------
# keyless functionaries: real Sigstore bundles, verified offline


def keyless_layout(owner: Any, identity: str = BEACON, issuer: str = GITHUB) -> bytes:
    tpl = {"_type": "layout", "expires": "2000-01-01T00:00:00Z", "readme": "keyless build",
           "keys": {}, "inspect": [],
           "steps": [{"_type": "step", "name": "build", "pubkeys": [], "threshold": 1,
                      "expected_command": [], "expected_materials": [["ALLOW", "*"]],
                      "expected_products": [["CREATE", "*"], ["DISALLOW", "*"]]}],
           "modelseal": {"step_predicates": {"build": [LINK_PREDICATE,
                                                       SLSA_PROVENANCE_PREDICATE]}}}
    return build_layout({"build": [sigstore_key(identity, issuer)]}, owner, template=tpl)


def keyless_decide(tmp: Path, root: str, **who: str) -> VerificationResult:
    fs = make_functionaries(tmp, ["owner"])
    bundle = (SIGSTORE / DSSE_BUNDLE).read_bytes()
    st = json.loads(base64.b64decode(json.loads(bundle)["dsseEnvelope"]["payload"]))
    subject = st["subject"][0]
    # the model whose file the Statement names (a.txt at the subject's digest)
    model = ModelView("sha256:" + "1" * 64,
                      {subject["name"]: "sha256:" + subject["digest"]["sha256"]})
    verifier = Verifier(keyless_layout(fs["owner"].signer, **who),
                        {fs["owner"].public.keyid: fs["owner"].public},
                        trusted_root=load_trusted_root(root))
    return verifier.verify(model, [Evidence("sha256:" + "2" * 64, bundle)])


def test_keyless_functionary_is_accepted(tmp_path: Path) -> None:
    r = keyless_decide(tmp_path, str(SIGSTORE / "staging_trusted_root.json"))
    assert r.verified, [x.message for x in r.refusals]
    assert r.steps[0].signers == [f"sigstore identity {BEACON} (issuer {GITHUB})"]


@pytest.mark.parametrize("who,needle", [
    ({"identity": "https://github.com/acme/models/.github/workflows/train.yml@refs/heads/main"},
     "is not https://github.com/acme/models"),
    ({"issuer": "https://accounts.google.com"}, "is not https://accounts.google.com"),
])
def test_keyless_from_another_identity_or_issuer(tmp_path: Path, who: dict[str, str],
                                                 needle: str) -> None:
    r = keyless_decide(tmp_path, str(SIGSTORE / "staging_trusted_root.json"), **who)
    refused(r, "step build", "keyless signature", BEACON, needle)


def test_keyless_against_the_wrong_trusted_root(tmp_path: Path) -> None:
    r = keyless_decide(tmp_path, str(SIGSTORE / "prod_trusted_root.json"))
    refused(r, "step build", "keyless signature", "trusted root")
    r = keyless_decide(tmp_path, "production")
    refused(r, "step build", "trusted root")


def test_keyless_bundle_in_registry_from_another_identity(tmp_path: Path,
                                                          registry: RegistryServer) -> None:
    """The same real bundle attached to a model in the registry, verified by the pipeline:
    a policy whose layout names another workflow refuses it, naming the identity."""
    from modelseal.oci import open_store
    from modelseal.refs import parse_ref
    from pipeline_fixtures import write_policy

    fs = make_functionaries(tmp_path, ["owner"])
    model = tmp_path / "m"
    model.mkdir()
    shutil.copy(SIGSTORE / "a.dsse.staging-rekor-v2.txt", model / "a.txt")
    ref = parse_ref(f"{registry.host}/keyless/model:v1")
    store = open_store(ref)
    publish(store, ref, model, [(SIGSTORE / DSSE_BUNDLE).read_bytes()])
    other = "https://github.com/acme/models/.github/workflows/train.yml@refs/heads/main"
    (tmp_path / "layout.json").write_bytes(keyless_layout(fs["owner"].signer, identity=other))
    policy = write_policy(tmp_path / "policy.yaml", str(tmp_path / "layout.json"),
                          fs["owner"].key_path.with_suffix(".pub"),
                          trusted_root=str(SIGSTORE / "staging_trusted_root.json"))
    r = verify_model(store, ref, load_policy(policy))
    refused(r, "step build", BEACON, f"is not {other}")


def test_keyless_template_fills_sigstore_functionaries() -> None:
    tpl = load_template("ml-pipeline-keyless")
    assert tpl["modelseal"]["default_issuer"] == GITHUB
