"""Verifying an honest pipeline end to end against a real registry (docker-registry)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from modelseal.attest.attachments import attach_bundle, subject_of
from modelseal.attest.bundle import sign_statement, verify_bundle
from modelseal.attest.statement import statement
from modelseal.cli import main
from modelseal.errors import UsageError
from modelseal.formats import VSA_PREDICATE
from modelseal.verify.pipeline import verify_model
from modelseal.verify.policy import compile_policy, load_policy
from pipeline_fixtures import FUNCTIONARY, STEPS, honest_pipeline, publish, record_pipeline
from registry_server import RegistryServer


def test_honest_pipeline_verifies(tmp_path: Path, registry: RegistryServer) -> None:
    p = honest_pipeline(tmp_path, registry.host)
    result = verify_model(p.store, p.ref, load_policy(p.policy_path))
    assert result.verified, result.to_dict()
    assert [s.name for s in result.steps] == list(STEPS)
    assert all(s.passed and len(s.signers) == 1 for s in result.steps)
    assert result.subject == p.digest



# ---- policy requirements -------------------------------------------------------------------

def _attach(p: Any, st: dict[str, Any], step: str) -> None:
    bundle = sign_statement(st, p.functionaries[FUNCTIONARY[step]].signer)
    attach_bundle(p.store, subject_of(p.store, p.digest), bundle)


def test_model_safety_requirement(tmp_path: Path, registry: RegistryServer) -> None:
    from modelseal.formats import SAFETY_PREDICATE
    from modelseal.safety import safety_predicate, safety_subjects, scan_model

    p = honest_pipeline(tmp_path, registry.host)
    r = verify_model(p.store, p.ref, load_policy(p.policy(model_safety=True)))
    assert not r.verified and [(x.rule, x.attestation) for x in r.refusals] == [
        ("model safety", None)]
    report = scan_model(p.model_dir)
    st = {"_type": "https://in-toto.io/Statement/v1", "subject": safety_subjects(report),
          "predicateType": SAFETY_PREDICATE, "predicate": safety_predicate(report)}
    _attach(p, st, "package")
    r = verify_model(p.store, p.ref, load_policy(p.policy(model_safety=True)))
    assert r.verified, [x.message for x in r.refusals]


def test_model_safety_refuses_a_pickle_that_runs_code(tmp_path: Path,
                                                      registry: RegistryServer) -> None:
    from modelseal.formats import SAFETY_PREDICATE
    from modelseal.safety import safety_predicate, safety_subjects, scan_model

    p = honest_pipeline(tmp_path, registry.host, push_model=False)
    # the trainer's job wrote a pickle that calls os.system when loaded: the layout is happy
    (p.model_dir / "evil.pkl").write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    fs = p.functionaries
    bundles = record_pipeline(p.workspace, {s: fs[FUNCTIONARY[s]].signer for s in STEPS})
    p.digest = publish(p.store, p.ref, p.model_dir, list(bundles.values()))
    report = scan_model(p.model_dir)
    _attach(p, {"_type": "https://in-toto.io/Statement/v1", "subject": safety_subjects(report),
                "predicateType": SAFETY_PREDICATE, "predicate": safety_predicate(report)},
            "package")
    assert verify_model(p.store, p.ref, load_policy(p.policy_path)).verified
    r = verify_model(p.store, p.ref, load_policy(p.policy(model_safety=True)))
    assert not r.verified
    assert any("evil.pkl" in x.message and "model safety" in x.message for x in r.refusals)


def test_required_stage_without_lifecycle_records_is_refused(tmp_path: Path,
                                                             registry: RegistryServer) -> None:
    """No record says the model is in production: nothing passes vacuously (the lifecycle
    chain itself is tested in test_lifecycle.py)."""
    from modelseal.verify.lifecycle_chain import RULE_STAGE

    p = honest_pipeline(tmp_path, registry.host)
    policy = p.policy(required_stage={"stage": "production", "step": "approve"})
    r = verify_model(p.store, p.ref, load_policy(policy))
    assert not r.verified and [x.rule for x in r.refusals] == [RULE_STAGE]


def test_max_attestation_age_needs_signed_times(tmp_path: Path,
                                               registry: RegistryServer) -> None:
    """Keyed links carry no signed time, and the registry's created annotation (which
    anyone who can write to the registry sets) proves no age: nothing to judge is refused."""
    p = honest_pipeline(tmp_path, registry.host)
    policy = load_policy(p.policy(max_attestation_age="7d"))
    r = verify_model(p.store, p.ref, policy)
    assert [(x.rule, x.step) for x in r.refusals] == [("max attestation age 7 days, 0:00:00",
                                                       None)]


def test_max_attestation_age_judges_signed_times(tmp_path: Path,
                                                 registry: RegistryServer) -> None:
    from modelseal.formats import TEST_RESULT_PREDICATE

    p = honest_pipeline(tmp_path, registry.host)
    when = datetime.now(UTC).replace(microsecond=0)
    _attach(p, statement([("model", p.digest)], TEST_RESULT_PREDICATE,
                         {"result": "PASSED", "timeVerified": when.isoformat()}), "evaluate")
    pol = p.policy(max_attestation_age="7d",
                   required_predicates=[{"type": TEST_RESULT_PREDICATE, "step": "evaluate"}])
    r = verify_model(p.store, p.ref, load_policy(pol))
    assert r.verified, [x.to_dict() for x in r.refusals]
    assert any(w.startswith("max attestation age") for w in r.warnings)  # the timeless links
    r = verify_model(p.store, p.ref, load_policy(pol), now=when + timedelta(days=8))
    assert [(x.rule, x.step) for x in r.refusals] == [("max attestation age 7 days, 0:00:00",
                                                       None)]


def test_policy_unknown_keys_are_usage_errors(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("layout: l.json\nlayout_keys: [k.pub]\nmax_age: 3d\n")
    with pytest.raises(UsageError, match="unknown key 'max_age'"):
        load_policy(tmp_path / "p.yaml")
    with pytest.raises(UsageError, match="unknown key 'treshold'"):
        compile_policy({"layout": "l", "layout_keys": ["k"], "model_safety": {"treshold": 1}},
                       load_key=lambda s: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(UsageError, match="pinned by digest"):
        compile_policy({"layout": "registry.example:5000/layouts/ml:v1", "layout_keys": ["k"]},
                       load_key=lambda s: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(UsageError, match="layout_keys"):
        compile_policy({"layout": "l.json"})


def test_layout_from_registry_pinned_by_digest(tmp_path: Path, registry: RegistryServer) -> None:
    from modelseal.oci import open_store
    from modelseal.refs import parse_ref
    from modelseal.verify.evidence import push_layout

    p = honest_pipeline(tmp_path, registry.host)
    lref = parse_ref(f"{registry.host}/layouts/ml-pipeline:current")
    digest = push_layout(open_store(lref), p.layout_path.read_bytes(), lref.tag)
    policy = load_policy(p.policy(layout=f"{lref.base}@{digest}"))
    r = verify_model(p.store, p.ref, policy)
    assert r.verified and r.layout == f"{lref.base}@{digest}"


# ---- CLI -----------------------------------------------------------------------------------

def test_cli_verify_exit_codes(tmp_path: Path, registry: RegistryServer) -> None:
    p = honest_pipeline(tmp_path, registry.host)
    runner = CliRunner()
    res = runner.invoke(main, ["verify", p.ref_text(), "--policy", str(p.policy_path)])
    assert res.exit_code == 0, res.output
    assert "VERIFIED" in res.output and "package" in res.output
    res = runner.invoke(main, ["verify", p.ref_text(), "--policy", str(p.policy_path), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["verified"] is True
    # refused: the policy wants a BOM nobody attached
    pol = p.policy(required_predicates=["https://cyclonedx.org/bom"])
    res = runner.invoke(main, ["verify", p.ref_text(), "--policy", str(pol), "--json"])
    assert res.exit_code == 10
    out = json.loads(res.output)
    assert out["verified"] is False and "cyclonedx" in out["refusals"][0]["message"]
    res = runner.invoke(main, ["verify", p.ref_text(), "--policy", str(pol)])
    assert res.exit_code == 10 and "REFUSED" in res.output
    # usage error: unknown policy key
    (tmp_path / "bad.yaml").write_text(f"layout: {p.layout_path}\nlayout_keys: [x]\nfoo: 1\n")
    res = runner.invoke(main, ["verify", p.ref_text(), "--policy", str(tmp_path / "bad.yaml")])
    assert res.exit_code == 2 and "foo" in res.output
    # registry unreachable
    registry.stop()
    res = runner.invoke(main, ["verify", p.ref_text(), "--policy", str(p.policy_path)])
    assert res.exit_code == 3, res.output


def test_cli_verify_attaches_a_signed_verification_summary(tmp_path: Path,
                                                          registry: RegistryServer) -> None:
    from modelseal.attest.attachments import list_attestations

    p = honest_pipeline(tmp_path, registry.host)
    key = p.functionaries["approver"].key_path.with_suffix(".key")
    res = CliRunner().invoke(main, ["verify", p.ref_text(), "--policy", str(p.policy_path),
                                    "--vsa-signer", str(key), "--attach", "--json",
                                    "--vsa-output", str(tmp_path / "vsa.json")])
    assert res.exit_code == 0, res.output
    vsa_digest = json.loads(res.output)["vsa"]
    vsas = list_attestations(p.store, p.digest, predicate_type=VSA_PREDICATE, fetch=True)
    assert [a.descriptor.digest for a in vsas] == [vsa_digest]
    vs = verify_bundle(vsas[0].bundle or b"", keys={p.functionaries["approver"].public.keyid:
                                                    p.functionaries["approver"].public})
    pred = vs.statement["predicate"]
    assert pred["verificationResult"] == "PASSED"
    assert vs.statement["subject"][0]["digest"]["sha256"] == p.digest.partition(":")[2]
    assert len(pred["inputAttestations"]) == 5 and pred["policy"]["digest"]["sha256"]
    assert (tmp_path / "vsa.json").exists()
    # the summary does not disturb later verifications
    r = verify_model(p.store, p.ref, load_policy(p.policy_path))
    assert r.verified and r.attestations_seen == 6
