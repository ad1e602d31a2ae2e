"""Attacks on a model's supply chain, each played against a real registry (docker-registry):
the honest pipeline verifies, and every attack is refused with a message naming its cause."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from modelseal.attest.bundle import load_trusted_root, sign_statement
from modelseal.attest.statement import statement
from modelseal.attestations import attach_bundle, subject_of
from modelseal.errors import DigestMismatchError, VerificationError
from modelseal.formats import BOM_PREDICATE, LINK_PREDICATE, SLSA_PROVENANCE_PREDICATE
from modelseal.intoto_layout.authoring import load_template, new_layout
from modelseal.intoto_layout.model import sigstore_key
from modelseal.modelpack import ModelMetadata
from modelseal.transfer import push
from modelseal.verify.decision import Evidence, ModelView, Verifier
from modelseal.verify.pipeline import pull_verified, verify_model
from modelseal.verify.policy import load_policy
from modelseal.verify.result import VerificationResult
from pipeline_fixtures import (
    FUNCTIONARY,
    STEPS,
    Pipeline,
    build_layout,
    honest_pipeline,
    make_functionaries,
    publish,
    record_statements,
    sign_doc,
)
from registry_server import RegistryServer, blob_path

SIGSTORE = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "sigstore"
if not SIGSTORE.exists():
    SIGSTORE = Path("/work/shared/testdata/sigstore")
BEACON = ("https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
          ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main")
GITHUB = "https://token.actions.githubusercontent.com"
DSSE_BUNDLE = "a.dsse.staging-rekor-v2.txt.sigstore.json"


def verify(p: Pipeline, **policy_extra: Any) -> VerificationResult:
    path = p.policy(**policy_extra) if policy_extra else p.policy_path
    return verify_model(p.store, p.ref, load_policy(path))


def refused(result: VerificationResult, *needles: str) -> str:
    """Assert refusal and that one message contains every needle; that message."""
    assert not result.verified, "expected a refusal"
    if os.environ.get("SHOW_REFUSALS"):
        print("\n".join(r.message for r in result.refusals))
    for r in result.refusals:
        if all(n in r.message for n in needles):
            return r.message
    raise AssertionError(f"no refusal mentions {needles}: {[r.message for r in result.refusals]}")


def variant(tmp: Path, registry: RegistryServer,
            tamper: Callable[[dict[str, dict[str, Any]], Pipeline], dict[str, bytes]] | None = None,
            ) -> Pipeline:
    """The honest pipeline not yet pushed; ``tamper(statements, p)`` returns the bundles."""
    p = honest_pipeline(tmp, registry.host, push_model=False)
    if tamper is not None:
        sts = {s: json.loads(base64.b64decode(json.loads(b)["dsseEnvelope"]["payload"]))
               for s, b in p.bundles.items()}
        p.bundles = tamper(sts, p)
    return p


def signer(p: Pipeline, step: str) -> Any:
    return p.functionaries[FUNCTIONARY[step]].signer


def ship(p: Pipeline, bundles: dict[str, bytes] | None = None) -> Pipeline:
    p.digest = publish(p.store, p.ref, p.model_dir, list((bundles or p.bundles).values()))
    return p


# ---------------------------------------------------------------------------------------------


def test_honest_pipeline_passes(tmp_path: Path, registry: RegistryServer) -> None:
    p = honest_pipeline(tmp_path, registry.host)
    r = verify(p, distinct_signers=[["train", "approve"]])
    assert r.verified, [x.message for x in r.refusals]
    assert [s.name for s in r.steps if s.passed] == list(STEPS)
    assert [s.signers[0].split(" ")[0] for s in r.steps] == [FUNCTIONARY[s] for s in STEPS]


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


def test_verified_pull_writes_the_model(tmp_path: Path, registry: RegistryServer) -> None:
    p = honest_pipeline(tmp_path, registry.host)
    result, pulled = pull_verified(p.store, p.ref, tmp_path / "out", load_policy(p.policy_path))
    assert result.verified and pulled.digest == p.digest
    assert (tmp_path / "out" / "weights.bin").read_bytes() == (
        p.model_dir / "weights.bin").read_bytes()


def test_refusal_leaves_pull_target_untouched(tmp_path: Path, registry: RegistryServer) -> None:
    p = variant(tmp_path, registry)
    ship(p, {s: b for s, b in p.bundles.items() if s != "approve"})
    with pytest.raises(VerificationError) as e:
        pull_verified(p.store, p.ref, tmp_path / "out", load_policy(p.policy_path))
    assert e.value.exit_code == 10 and any("step approve" in r for r in e.value.reasons)
    assert not (tmp_path / "out").exists()


def test_tag_moved_to_unattested_digest(tmp_path: Path, registry: RegistryServer) -> None:
    p = honest_pipeline(tmp_path, registry.host)
    (p.model_dir / "weights.bin").write_bytes(b"backdoored weights")
    moved = push(p.model_dir, p.store, p.ref, ModelMetadata({"name": "tiny"}), allow_retag=True)
    assert moved.digest != p.digest
    r = verify(p)
    assert r.subject == moved.digest
    refused(r, "step prepare-data", "no attestation found")
    refused(r, "step package", "no attestation found")


def test_attestation_signed_by_key_not_authorized_for_its_step(tmp_path: Path,
                                                               registry: RegistryServer) -> None:
    def tamper(sts: dict[str, Any], p: Pipeline) -> dict[str, bytes]:
        b = {s: sign_statement(st, signer(p, s)) for s, st in sts.items()}
        b["train"] = sign_statement(sts["train"], signer(p, "evaluate"))  # in the layout
        return b

    p = ship(variant(tmp_path, registry, tamper))
    r = verify(p)
    evaluator = p.functionaries["evaluator"].public.keyid[:16]
    refused(r, "step train", "threshold 1 not met")
    refused(r, "for step train", evaluator, "does not authorize")


def test_attestation_signed_by_a_key_outside_the_layout(tmp_path: Path,
                                                        registry: RegistryServer) -> None:
    def tamper(sts: dict[str, Any], p: Pipeline) -> dict[str, bytes]:
        mallory = make_functionaries(p.tmp, ["mallory"])["mallory"]
        b = {s: sign_statement(st, signer(p, s)) for s, st in sts.items()}
        b["approve"] = sign_statement(sts["approve"], mallory.signer)
        p.extra["mallory"] = mallory.public.keyid
        return b

    p = ship(variant(tmp_path, registry, tamper))
    r = verify(p)
    refused(r, "for step approve", p.extra["mallory"], "not trusted")


def _two_trainers(tmp: Path, registry: RegistryServer, second_train: Callable[[dict[str, Any]],
                  dict[str, Any]] | None) -> Pipeline:
    p = variant(tmp_path := tmp, registry)
    fs = make_functionaries(tmp_path, ["trainer2"])
    p.functionaries.update(fs)
    keys = p.step_keys()
    keys["train"].append(fs["trainer2"].public)
    p.resign_layout(build_layout(keys, p.owner.signer, thresholds={"train": 2}))
    bundles = dict(p.bundles)
    if second_train is not None:
        st = json.loads(base64.b64decode(json.loads(p.bundles["train"])["dsseEnvelope"]["payload"]))
        bundles["train-2"] = sign_statement(second_train(st), fs["trainer2"].signer)
    return ship(p, bundles)


def test_threshold_not_met(tmp_path: Path, registry: RegistryServer) -> None:
    r = verify(_two_trainers(tmp_path, registry, None))
    refused(r, "step train", "threshold 2 not met", "1 valid signature")


def test_threshold_met_by_two_agreeing_trainers(tmp_path: Path, registry: RegistryServer) -> None:
    r = verify(_two_trainers(tmp_path, registry, lambda st: st))
    assert r.verified, [x.message for x in r.refusals]
    assert len(next(s for s in r.steps if s.name == "train").signers) == 2


def test_two_functionaries_report_different_products(tmp_path: Path,
                                                     registry: RegistryServer) -> None:
    def other(st: dict[str, Any]) -> dict[str, Any]:
        for s in st["subject"]:
            if s["name"] == "model/weights.bin":
                s["digest"]["sha256"] = "ab" * 32
        return st

    r = verify(_two_trainers(tmp_path, registry, other))
    refused(r, "step train", "different artifacts", "model/weights.bin")


def test_expired_layout(tmp_path: Path, registry: RegistryServer) -> None:

    p = ship(variant(tmp_path, registry))
    doc = new_layout(load_template("ml-pipeline"),
                     [(s, k) for s, ks in p.step_keys().items() for k in ks],
                     expires=datetime.now(UTC) + timedelta(days=1))
    doc["expires"] = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    p.resign_layout(sign_doc(doc, p.owner.signer))  # `layout sign` would refuse it
    refused(verify(p), "layout expired")


def test_layout_signed_by_untrusted_key(tmp_path: Path, registry: RegistryServer) -> None:
    p = ship(variant(tmp_path, registry))
    p.resign_layout(build_layout(p.step_keys(), signer(p, "train")))
    msg = refused(verify(p), "layout signature", p.owner.public.keyid[:16])
    assert p.functionaries["trainer"].public.keyid[:16] in msg


def test_attestation_copied_from_another_model(tmp_path: Path, registry: RegistryServer) -> None:
    p = honest_pipeline(tmp_path, registry.host)
    # a BOM signed by the release functionary, but about another model's weights
    bom = statement([("weights.bin", "cd" * 32)], BOM_PREDICATE,
                    {"bomFormat": "CycloneDX", "specVersion": "1.6"})
    attach_bundle(p.store, subject_of(p.store, p.digest), sign_statement(bom, signer(p, "package")))
    r = verify(p, required_predicates=[BOM_PREDICATE])
    refused(r, BOM_PREDICATE, "not about this model", "weights.bin")
    # the same BOM about every file of this model is accepted
    good = statement([(f.name, hashlib.sha256(f.read_bytes()).hexdigest())
                      for f in p.model_dir.iterdir()], BOM_PREDICATE,
                     {"bomFormat": "CycloneDX", "specVersion": "1.6"})
    attach_bundle(p.store, subject_of(p.store, p.digest),
                  sign_statement(good, signer(p, "package")))
    assert verify(p, required_predicates=[BOM_PREDICATE]).verified


def test_package_link_copied_from_another_model(tmp_path: Path, registry: RegistryServer) -> None:
    def tamper(sts: dict[str, Any], p: Pipeline) -> dict[str, bytes]:
        for s in sts["package"]["subject"]:
            s["digest"]["sha256"] = "ef" * 32  # the other model's files
        return {s: sign_statement(st, signer(p, s)) for s, st in sts.items()}

    r = verify(ship(variant(tmp_path, registry, tamper)))
    refused(r, "final products", "weights.bin", "content swapped")


def test_product_in_model_that_no_step_produced(tmp_path: Path, registry: RegistryServer) -> None:
    p = variant(tmp_path, registry)
    (p.model_dir / "backdoor.pkl").write_bytes(b"cos\nsystem\n")
    r = verify(ship(p))
    refused(r, "final products", "backdoor.pkl", "did not produce it")


def test_packager_slips_in_a_file_train_never_produced(tmp_path: Path,
                                                       registry: RegistryServer) -> None:
    p = variant(tmp_path, registry)
    (p.model_dir / "backdoor.pkl").write_bytes(b"cos\nsystem\n")
    sts = record_statements_package_only(p)
    p.bundles["package"] = sign_statement(sts, signer(p, "package"))
    r = verify(ship(p))
    refused(r, "step package", "backdoor.pkl", "not among the products of step train")


def record_statements_package_only(p: Pipeline) -> dict[str, Any]:
    from modelseal.attest.steps import record_step

    return record_step("package", ["true"], ["."], ["."], base_dir=p.model_dir).statement


def test_file_renamed(tmp_path: Path, registry: RegistryServer) -> None:
    p = variant(tmp_path, registry)
    (p.model_dir / "config.json").rename(p.model_dir / "config.yaml")
    r = verify(ship(p))
    refused(r, "final products", "config.json", "does not have")
    refused(r, "final products", "config.yaml", "did not produce it")


def test_step_missing(tmp_path: Path, registry: RegistryServer) -> None:
    p = variant(tmp_path, registry)
    r = verify(ship(p, {s: b for s, b in p.bundles.items() if s != "evaluate"}))
    refused(r, "step evaluate", "no attestation found")


def test_deleted_attestation(tmp_path: Path, registry: RegistryServer) -> None:
    p = honest_pipeline(tmp_path, registry.host)
    r0 = verify(p)
    approve = next(s for s in r0.steps if s.name == "approve").attestations[0]
    p.store.delete_manifest(approve)  # type: ignore[attr-defined]
    r = verify(p)
    refused(r, "step approve", "no attestation found")


def test_same_key_signs_train_and_approve(tmp_path: Path, registry: RegistryServer) -> None:
    p = variant(tmp_path, registry)
    keys = p.step_keys()
    keys["approve"] = list(keys["train"])  # a layout that forgot separation of duties

    def no_sod(tpl: dict[str, Any]) -> None:
        tpl["modelseal"]["separation_of_duties"] = []

    p.resign_layout(build_layout(keys, p.owner.signer, edit=no_sod))
    sts = record_statements(p.workspace)
    bundles = {s: sign_statement(st, signer(p, s)) for s, st in sts.items()}
    bundles["approve"] = sign_statement(sts["approve"], signer(p, "train"))
    ship(p, bundles)
    assert verify(p).verified  # the layout alone allows it ...
    trainer = p.functionaries["trainer"].public.keyid[:16]
    r = verify(p, distinct_signers=[["train", "approve"]])  # ... the policy does not
    refused(r, "distinct signers train/approve", trainer, "signed both train and approve")


def test_layouts_separation_of_duties_is_enforced_too(tmp_path: Path,
                                                     registry: RegistryServer) -> None:
    p = variant(tmp_path, registry)
    keys = p.step_keys()
    keys["approve"] = list(keys["train"])
    doc = new_layout(load_template("ml-pipeline"),  # the template keeps train/approve apart
                     [(s, k) for s, ks in keys.items() for k in ks])
    p.resign_layout(sign_doc(doc, p.owner.signer))  # `layout sign` would refuse it
    sts = record_statements(p.workspace)
    bundles = {s: sign_statement(st, signer(p, s)) for s, st in sts.items()}
    bundles["approve"] = sign_statement(sts["approve"], signer(p, "train"))
    refused(verify(ship(p, bundles)), "signed both train and approve")


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
