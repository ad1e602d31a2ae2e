"""A Python caller does what the CLI does, without the CLI: ``transfer.publish`` pushes a model,
signs the package step and attaches every attestation, and the deployer's ``verify`` accepts
it; the BOM flow, scan signing and the VSA are library calls too, and every signed file is
named by the one rule of ``attest.output``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelseal.attest.attachments import list_attestations
from modelseal.attest.bundle import parse_bundle
from modelseal.formats import BOM_PREDICATE, LINK_PREDICATE, MODEL_SIGNING_PREDICATE
from modelseal.modelpack import ModelMetadata
from modelseal.transfer import publish
from modelseal.verify.pipeline import verify_model
from modelseal.verify.policy import load_policy
from pipeline_fixtures import FUNCTIONARY, Pipeline, honest_pipeline
from registry_server import RegistryServer


def _host(tmp_path: Path, registry: RegistryServer | None) -> str:
    return registry.host if registry is not None else f"oci:{tmp_path / 'store'}"


def _published(tmp_path: Path, host: str) -> tuple[Pipeline, Path]:
    """The honest pipeline's four first steps as bundle files; the package step left to
    ``publish``. Returns the pipeline (not pushed) and the bundles' directory."""
    p = honest_pipeline(tmp_path, host, push_model=False)
    given = tmp_path / "given"
    given.mkdir()
    for step, data in p.bundles.items():
        if step != "package":
            (given / f"{step}.intoto.sigstore.json").write_bytes(data)
    return p, given


@pytest.mark.parametrize("where", ["oci", "registry"])
def test_python_caller_publishes_a_signed_model_that_verify_accepts(
        where: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    registry = request.getfixturevalue("registry") if where == "registry" else None
    p, given = _published(tmp_path, _host(tmp_path, registry))
    release = p.functionaries[FUNCTIONARY["package"]].signer
    signed = tmp_path / "signed"
    done = publish(p.model_dir, p.store, p.ref, ModelMetadata({"name": "tiny"}),
                   signer=release, attestations=[given], signed_dir=signed)
    assert done.skipped == {}
    assert len(done.newly_attached()) == 6  # four steps given, package link, model.sig
    kid8 = str(release.public_key.keyid)[:8]
    assert sorted(f.name for f in done.written) == [
        "model.sig", f"package.{kid8}.intoto.sigstore.json"]
    link = parse_bundle((signed / f"package.{kid8}.intoto.sigstore.json").read_bytes())
    assert link.statement is not None and link.statement["predicate"]["name"] == "package"

    result = verify_model(p.store, p.ref, load_policy(p.policy_path))
    assert result.verified, [r.to_dict() for r in result.refusals]
    assert result.subject == done.digest

    again = publish(p.model_dir, p.store, p.ref, ModelMetadata({"name": "tiny"}),
                    signer=release, attestations=[given], signed_dir=signed)
    assert again.push.unchanged and again.newly_attached() == [] and again.written == []
    assert len(again.already_attached()) == 6
    types = sorted(str(i.predicate_type) for i in list_attestations(p.store, done.digest))
    assert types.count(LINK_PREDICATE) == 5 and types.count(MODEL_SIGNING_PREDICATE) == 1


def test_python_caller_builds_signs_and_attaches_the_bom_and_a_vsa(tmp_path: Path) -> None:
    from modelseal.bom.flow import BomInputs, publish_bom
    from modelseal.verify.vsa import publish_vsa

    p, given = _published(tmp_path, f"oci:{tmp_path / 'store'}")
    release = p.functionaries[FUNCTIONARY["package"]].signer
    done = publish(p.model_dir, p.store, p.ref, ModelMetadata({"name": "tiny"}),
                   signer=release, attestations=[given], signed_dir=tmp_path / "signed")
    bom = publish_bom(p.store, p.ref, BomInputs(version="1.0"), signer=release, attach=True,
                      attestations_dir=tmp_path / "signed")
    kid8 = str(release.public_key.keyid)[:8]
    assert bom.signed == tmp_path / "signed" / f"bom.{kid8}.intoto.sigstore.json"
    assert bom.digest == done.digest and bom.attached["attestation"] and bom.attached["bom"]
    assert bom.steps == ["prepare-data", "train", "evaluate", "approve", "package"]
    assert BOM_PREDICATE in {i.predicate_type for i in list_attestations(p.store, done.digest)}

    policy = load_policy(p.policy_path)
    result = verify_model(p.store, p.ref, policy)
    assert result.verified
    out = publish_vsa(p.store, p.ref, result, policy, release, attach=True,
                      output=tmp_path / "vsa" / "summary.json")
    assert out.attached is not None and result.vsa == out.attached
    vsa = parse_bundle((tmp_path / "vsa" / "summary.json").read_bytes()).statement
    assert vsa is not None and vsa["predicate"]["verificationResult"] == "PASSED"


def test_a_refused_model_gets_no_vsa_attached_but_the_file_is_written(tmp_path: Path) -> None:
    from modelseal.verify.vsa import publish_vsa

    p, _given = _published(tmp_path, f"oci:{tmp_path / 'store'}")
    release = p.functionaries[FUNCTIONARY["package"]].signer
    publish(p.model_dir, p.store, p.ref, ModelMetadata({"name": "tiny"}), signer=release,
            signed_dir=tmp_path / "signed")  # the other steps' evidence is missing
    policy = load_policy(p.policy_path)
    result = verify_model(p.store, p.ref, policy)
    assert not result.verified
    out = publish_vsa(p.store, p.ref, result, policy, release, attach=True,
                      output=tmp_path / "failed.json")
    assert out.attached is None and result.vsa is None
    st = parse_bundle((tmp_path / "failed.json").read_bytes()).statement
    assert st is not None and st["predicate"]["verificationResult"] == "FAILED"


def test_scan_signing_is_a_library_call_named_by_the_rule(tmp_path: Path) -> None:
    from modelseal.attest.signers import keygen, load_signer
    from modelseal.formats import SAFETY_PREDICATE
    from modelseal.safety import scan_model, sign_scan

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"hidden": 8}))
    keygen(tmp_path / "k")
    signer = load_signer(str(tmp_path / "k.key"))
    path = sign_scan(scan_model(model), signer, attestations_dir=tmp_path / "atts")
    assert path == tmp_path / "atts" / f"scan.{str(signer.public_key.keyid)[:8]}" \
                                       ".intoto.sigstore.json"
    st = parse_bundle(path.read_bytes()).statement
    assert st is not None and st["predicateType"] == SAFETY_PREDICATE
    assert [s["name"] for s in st["subject"]] == ["config.json"]
