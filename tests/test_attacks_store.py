"""Attacks on a model's supply chain, played in milliseconds by a malicious registry.

One honest pipeline is recorded and pushed to an ``oci:`` image-layout store once per module
(``attack_world``); each attack wraps it in a ``MaliciousStore`` (swapped blobs, moved tags,
hidden or added referrers, a stale index, a replayed manifest), verifies through it, and
asserts on the refusal's structure (rule, step, artifact, key, attestation), never on its
wording; every verification also shows it fetched no blob of the model (``attack_world.run``).
The attacks on the verdict's own rules (one key as two, FAILED evidence, future times,
partial and contradicting evidence) are in ``test_verdict_attacks.py`` over the same world;
one real-registry test per class stays in ``test_verify_attacks.py``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from attack_world import (
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
from modelseal.attest.bundle import sign_statement
from modelseal.attest.statement import statement
from modelseal.errors import DigestMismatchError, VerificationError
from modelseal.formats import ANN_BLOB, BOM_PREDICATE
from modelseal.intoto_layout.model import EXTENSION
from modelseal.modelpack import ModelMetadata
from modelseal.oci.referrers import fallback_tag
from modelseal.transfer import push
from modelseal.verify.pipeline import pull_verified
from modelseal.verify.policy import load_policy
from pipeline_fixtures import make_functionaries, sign_doc, write_policy

RULES_OF_MISSING_STEP = {"threshold", "distinct signers train/approve",
                         "distinct signers evaluate/approve"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("attacks")
    yield build_world(tmp, f"oci:{tmp}/registry")


def push_variant(w: World, tmp: Path, change: Callable[[Path], object], *,
                 attest: bool = True) -> MaliciousStore:
    """An attacker's model (the honest files copied to ``tmp/evil-model`` and changed by
    ``change``) pushed over the honest tag, with the honest attestations attached to it when
    ``attest``."""
    store = MaliciousStore(w.p.store)
    model = tmp / "evil-model"
    shutil.copytree(w.p.model_dir, model)
    change(model)
    moved = push(model, store, w.p.ref, ModelMetadata({"name": "tiny"}), allow_retag=True)
    assert moved.digest != w.p.digest
    if attest:
        for bundle in w.p.bundles.values():
            store.add(moved.digest, bundle)
    return store


def test_honest_model_verifies_reading_only_metadata(world: World, tmp_path: Path) -> None:
    store = MaliciousStore(world.p.store)
    r = run(world, tmp_path, store)
    assert r.verified, [x.to_dict() for x in r.refusals]
    assert r.subject == world.p.digest
    # the bundles are the only blobs read: one per step
    assert len(store.blobs_fetched) == len(world.p.bundles)


def test_attacks_never_write_the_honest_store(world: World, tmp_path: Path) -> None:
    """What the attacker writes lands in its overlay: one world serves every attack."""
    w = world
    tags, index = w.p.store.list_tags(), w.p.store.get_manifest(fallback_tag(w.p.digest))
    store = push_variant(w, tmp_path, lambda m: (m / "weights.bin").write_bytes(b"evil"))
    store.add(w.p.digest, b"junk")
    assert store.list_tags() != tags
    assert w.p.store.list_tags() == tags
    assert w.p.store.get_manifest(fallback_tag(w.p.digest)) == index
    assert w.p.store.resolve(w.p.ref.tag or "") == w.p.digest


# ---- swapped blob -----------------------------------------------------------------------


def test_swapped_weight_and_config_are_not_read_to_decide_and_refused_at_pull(
        world: World, tmp_path: Path) -> None:
    w = world
    store = MaliciousStore(w.p.store)
    raw, _, _ = store.get_manifest(w.p.digest)
    config = json.loads(raw)["config"]["digest"]
    weights = "sha256:" + w.files["weights.bin"]
    store.swap(weights, b"\x00" * 4096)
    store.swap(config, b'{"backdoor": true}')
    r = run(w, tmp_path, store)  # the decision reads the manifest, not the blobs ...
    assert r.verified and config not in store.blobs_fetched
    target = tmp_path / "deploy"
    with pytest.raises(DigestMismatchError):  # ... and the pull checks each one
        pull_verified(store, w.p.ref, target, load_policy(tmp_path / "policy.yaml"))
    assert not target.exists()


def test_swapped_referrer_bundle_counts_for_nothing(world: World, tmp_path: Path) -> None:
    """The registry serves another step's validly signed bundle for approve's."""
    w = world
    store = MaliciousStore(w.p.store)
    approve = [d for d in store.referrers(w.p.digest) if d.digest in step_referrers(w, "approve")]
    store.swap(approve[0].annotations[ANN_BLOB], w.p.bundles["evaluate"])
    r = run(w, tmp_path, store)
    find(r, rule="threshold", step="approve")
    assert approve[0].digest in {i.attestation for i in r.ignored}
    assert next(s for s in r.steps if s.name == "evaluate").passed


# ---- moved tag --------------------------------------------------------------------------


def test_tag_moved_to_an_unattested_model(world: World, tmp_path: Path) -> None:
    store = push_variant(world, tmp_path, lambda m: (m / "weights.bin").write_bytes(b"evil"),
                         attest=False)
    r = run(world, tmp_path, store)
    assert r.subject == store.tags[world.p.ref.tag or ""]
    assert {(x.rule, x.step) for x in r.refusals if x.rule == "threshold"} == {
        ("threshold", s) for s in world.p.bundles}


def test_tag_moved_to_a_model_with_a_file_no_step_produced(world: World,
                                                          tmp_path: Path) -> None:
    store = push_variant(world, tmp_path,
                         lambda m: (m / "backdoor.pkl").write_bytes(b"cos\nsystem\n"))
    r = run(world, tmp_path, store)
    find(r, rule="final products", step="package", artifact="backdoor.pkl")


def test_tag_moved_to_a_model_with_a_renamed_file(world: World, tmp_path: Path) -> None:
    store = push_variant(world, tmp_path,
                         lambda m: (m / "config.json").rename(m / "config.yaml"))
    r = run(world, tmp_path, store)
    find(r, rule="final products", step="package", artifact="config.json")
    find(r, rule="final products", step="package", artifact="config.yaml")


def test_packager_slips_in_a_file_train_never_produced(world: World, tmp_path: Path) -> None:
    """The packager's own link lists the extra file: package's MATCH ... FROM train refuses."""
    from modelseal.attest.steps import record_step

    w = world
    model = tmp_path / "evil-model"

    def add_backdoor(m: Path) -> None:
        (m / "backdoor.pkl").write_bytes(b"cos\nsystem\n")

    store = push_variant(w, tmp_path, add_backdoor, attest=False)
    moved = store.tags[w.p.ref.tag or ""]
    for s, bundle in w.p.bundles.items():
        if s != "package":
            store.add(moved, bundle)
    package = record_step("package", ["true"], ["."], ["."], base_dir=model).statement
    store.add(moved, sign_statement(package, signer_of(w, "release")))
    r = run(w, tmp_path, store)
    find(r, step="package", artifact="backdoor.pkl", rule="expected_materials")


# ---- wrong key --------------------------------------------------------------------------


def test_attestation_signed_by_a_key_outside_the_layout(world: World, tmp_path: Path) -> None:
    w = world
    mallory = make_functionaries(tmp_path, ["mallory"])["mallory"]
    store, att = replace_step(w, "approve", sign_statement(w.statements["approve"],
                                                           mallory.signer))
    r = run(w, tmp_path, store)
    find(r, rule="threshold", step="approve")
    find(r, rule="signature", step="approve", attestation=att)


def test_attestation_signed_by_a_key_not_authorized_for_its_step(world: World,
                                                                 tmp_path: Path) -> None:
    w = world
    store, att = replace_step(w, "train", sign_statement(w.statements["train"],
                                                         signer_of(w, "evaluator")))
    r = run(w, tmp_path, store)
    find(r, rule="threshold", step="train")
    find(r, rule="authorized functionaries", step="train", attestation=att,
         key=ident(w, "evaluator"))


def test_layout_signed_by_an_untrusted_key(world: World, tmp_path: Path) -> None:
    r = run(world, tmp_path, layout=sign_doc(layout_doc(world), signer_of(world, "trainer")))
    find(r, rule="layout signature")


def test_expired_layout(world: World, tmp_path: Path) -> None:
    doc = layout_doc(world)
    doc["expires"] = "2001-01-01T00:00:00Z"  # `layout sign` would refuse it
    find(run(world, tmp_path, doc=doc), rule="layout expiration")


# ---- thresholds and one key in two roles ------------------------------------------------


def _two_trainers(w: World, tmp: Path, second: dict[str, Any] | None
                  ) -> tuple[MaliciousStore, dict[str, Any]]:
    """A layout asking two trainers for train, and the second trainer's link (if any)."""
    trainer2 = make_functionaries(tmp, ["trainer2"])["trainer2"]
    doc = layout_doc(w, train=[public_of(w, "trainer"), trainer2.public])
    next(s for s in doc["steps"] if s["name"] == "train")["threshold"] = 2
    store = MaliciousStore(w.p.store)
    if second is not None:
        store.add(w.p.digest, sign_statement(second, trainer2.signer))
    return store, doc


def test_threshold_not_met(world: World, tmp_path: Path) -> None:
    store, doc = _two_trainers(world, tmp_path, None)
    find(run(world, tmp_path, store, doc), rule="threshold", step="train")


def test_threshold_met_by_two_agreeing_trainers(world: World, tmp_path: Path) -> None:
    store, doc = _two_trainers(world, tmp_path, world.statements["train"])
    r = run(world, tmp_path, store, doc)
    assert r.verified, [x.to_dict() for x in r.refusals]
    assert len(next(s for s in r.steps if s.name == "train").identities) == 2


def test_two_trainers_report_different_products(world: World, tmp_path: Path) -> None:
    other = copy.deepcopy(world.statements["train"])
    for s in other["subject"]:
        if s["name"] == "model/weights.bin":
            s["digest"]["sha256"] = "ab" * 32
    store, doc = _two_trainers(world, tmp_path, other)
    find(run(world, tmp_path, store, doc), rule="threshold artifacts", step="train")


def test_same_key_signs_train_and_approve(world: World, tmp_path: Path) -> None:
    """The layout's separation of duties, and the policy's distinct_signers, count keys."""
    w = world
    store, _ = replace_step(w, "approve", sign_statement(w.statements["approve"],
                                                         signer_of(w, "trainer")))
    doc = layout_doc(w, approve=[public_of(w, "trainer")])
    find(run(w, tmp_path, store, doc), rule="distinct signers train/approve",
         key=ident(w, "trainer"))
    doc[EXTENSION]["separation_of_duties"] = []  # a layout that forgot it ...
    assert run(w, tmp_path, store, doc).verified
    r = run(w, tmp_path, store, doc, distinct_signers=[["train", "approve"]])  # ... the policy
    find(r, rule="distinct signers train/approve", key=ident(w, "trainer"))


# ---- evidence about another model -------------------------------------------------------


def test_bom_about_another_model_does_not_count(world: World, tmp_path: Path) -> None:
    w = world
    store = MaliciousStore(w.p.store)
    bom = statement([("weights.bin", "cd" * 32)], BOM_PREDICATE,
                    {"bomFormat": "CycloneDX", "specVersion": "1.6"})
    att = store.add(w.p.digest, sign_statement(bom, signer_of(w, "release")))
    r = run(w, tmp_path, store, required_predicates=[BOM_PREDICATE])
    find(r, rule=f"required predicate {BOM_PREDICATE}", attestation=att,
         key=ident(w, "release"))


def test_package_link_copied_from_another_model(world: World, tmp_path: Path) -> None:
    w = world
    other = copy.deepcopy(w.statements["package"])
    for s in other["subject"]:
        s["digest"]["sha256"] = "ef" * 32  # the other model's files
    store, _ = replace_step(w, "package", sign_statement(other, signer_of(w, "release")))
    r = run(w, tmp_path, store)
    find(r, rule="final products", step="package", artifact="weights.bin")


# ---- deleted or hidden attestation ------------------------------------------------------


@pytest.mark.parametrize("step", ["evaluate", "approve"])
def test_hidden_attestation_leaves_its_step_unsigned(world: World, tmp_path: Path,
                                                     step: str) -> None:
    store = MaliciousStore(world.p.store)
    for d in step_referrers(world, step):
        store.hide(d)
    r = run(world, tmp_path, store)
    find(r, rule="threshold", step=step)
    assert {x.step for x in r.refusals} == {step}
    assert {x.rule for x in r.refusals} <= RULES_OF_MISSING_STEP


def test_refusal_leaves_the_pull_target_untouched(world: World, tmp_path: Path) -> None:
    w = world
    store = MaliciousStore(w.p.store)
    for d in step_referrers(w, "approve"):
        store.hide(d)
    pol = write_policy(tmp_path / "policy.yaml", str(w.p.layout_path),
                       w.p.owner.key_path.with_suffix(".pub"))
    with pytest.raises(VerificationError) as e:
        pull_verified(store, w.p.ref, tmp_path / "out", load_policy(pol))
    assert e.value.exit_code == 10
    assert not (tmp_path / "out").exists() and not store.blobs_fetched & w.layers


# ---- added hostile referrers ------------------------------------------------------------


def test_hostile_referrers_next_to_the_honest_ones_are_ignored_with_a_reason(
        world: World, tmp_path: Path) -> None:
    w = world
    mallory = make_functionaries(tmp_path, ["mallory"])["mallory"]
    store = MaliciousStore(w.p.store)
    junk = store.add(w.p.digest, b"\x00not a bundle")
    forged = store.add(w.p.digest, sign_statement(w.statements["approve"], mallory.signer))
    unused = b"{}"  # labelled with a predicate type nothing uses: not even fetched
    labelled = store.add(w.p.digest, unused, predicate_type="https://example.com/unused")
    r = run(w, tmp_path, store)
    assert r.verified, [x.to_dict() for x in r.refusals]
    assert {junk, forged, labelled} <= {i.attestation for i in r.ignored}
    assert "sha256:" + hashlib.sha256(unused).hexdigest() not in store.blobs_fetched


# ---- stale index, replayed manifest -----------------------------------------------------


def test_stale_index_hides_no_attestation(world: World, tmp_path: Path) -> None:
    """An index from before approve's attestation came: its own tag still finds it."""
    store = MaliciousStore(world.p.store)
    store.serve(fallback_tag(world.p.digest), world.stale_index)
    r = run(world, tmp_path, store)
    assert r.verified, [x.to_dict() for x in r.refusals]
    assert step_referrers(world, "approve") <= set(
        next(s for s in r.steps if s.name == "approve").attestations)


def test_stale_index_brings_back_no_deleted_attestation(world: World, tmp_path: Path) -> None:
    """The index still lists approve's attestation, deleted since (its tag is gone)."""
    store = MaliciousStore(world.p.store)
    index, _, _ = world.p.store.get_manifest(fallback_tag(world.p.digest))
    gone = step_referrers(world, "approve")
    assert all(d.encode() in index for d in gone)
    for d in gone:
        store.hide(d)
    store.serve(fallback_tag(world.p.digest), index)
    find(run(world, tmp_path, store), rule="threshold", step="approve")


def test_replayed_manifest_is_judged_as_itself(world: World, tmp_path: Path) -> None:
    """A frozen registry serves the old model for the tag: the verdict names the manifest
    it judged, and the policy's age bound refuses evidence with no signed time."""
    w = world
    store = push_variant(w, tmp_path, lambda m: (m / "weights.bin").write_bytes(b"v2"),
                         attest=False)
    old, _, _ = w.p.store.get_manifest(w.p.digest)
    store.serve(w.p.ref.tag or "", old)
    r = run(w, tmp_path, store)
    assert r.verified and r.subject == w.p.digest
    r = run(w, tmp_path, store, max_attestation_age="30d")
    assert any(x.rule and x.rule.startswith("max attestation age") for x in r.refusals)


def test_manifest_served_for_another_digest_is_refused(world: World, tmp_path: Path) -> None:
    w = world
    store = push_variant(w, tmp_path, lambda m: (m / "weights.bin").write_bytes(b"v2"))
    moved = store.tags[w.p.ref.tag or ""]
    old, _, _ = w.p.store.get_manifest(w.p.digest)
    store.serve(moved, old)  # the client asked for v2 by digest, and got v1
    with pytest.raises(DigestMismatchError):
        run(w, tmp_path, store, ref=w.p.ref.with_digest(moved))

