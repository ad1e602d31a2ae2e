"""The decision as an object (issue 9): a ``Verifier`` is given its trust material once and fed
evidence as bytes, with no registry and no I/O; the result it writes (``verify --json``) reads
back to an equal result.

The evidence is the honest five-step pipeline, really run and signed, held in memory.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from modelseal.attest.bundle import sign_statement
from modelseal.attest.statement import statement
from modelseal.cli import main
from modelseal.errors import InputError, UsageError
from modelseal.formats import LINK_PREDICATE, TEST_RESULT_PREDICATE
from modelseal.oci import open_store
from modelseal.refs import parse_ref
from modelseal.verify.decision import Evidence, ModelView, Verifier, verify_attestations
from modelseal.verify.pipeline import verify_model
from modelseal.verify.policy import load_policy
from modelseal.verify.requirements import AllOf, RequiredPredicate
from modelseal.verify.result import Ignored, Refusal, VerificationResult
from pipeline_fixtures import (
    FUNCTIONARY,
    STEPS,
    build_layout,
    make_functionaries,
    make_workspace,
    publish,
    record_pipeline,
    write_policy,
)


@dataclass
class Honest:
    """The honest pipeline's trust material and evidence, in memory."""

    tmp: Path
    model_dir: Path
    layout: bytes
    owner: Any  # the layout owner's public key
    owner_key: Path
    functionaries: dict[str, Any]
    bundles: dict[str, bytes]  # step -> bundle
    model: ModelView

    @property
    def keys(self) -> dict[str, Any]:
        return {self.owner.keyid: self.owner}

    def evidence(self, *skip: str) -> list[Evidence]:
        return [Evidence("sha256:" + hashlib.sha256(b).hexdigest(), b)
                for s, b in self.bundles.items() if s not in skip]


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> Honest:
    tmp = tmp_path_factory.mktemp("honest")
    fs = make_functionaries(tmp, [*FUNCTIONARY.values(), "owner", "mallory"])
    ws = make_workspace(tmp)
    bundles = record_pipeline(ws, {s: fs[FUNCTIONARY[s]].signer for s in STEPS})
    layout = build_layout({s: [fs[FUNCTIONARY[s]].public] for s in STEPS}, fs["owner"].signer,
                          names={fs[n].public.keyid: n for n in FUNCTIONARY.values()})
    model_dir = ws / "model"
    files = {p.relative_to(model_dir).as_posix():
             "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(model_dir.rglob("*")) if p.is_file()}
    model = ModelView("sha256:" + "ab" * 32, files)
    return Honest(tmp, model_dir, layout, fs["owner"].public,
                  fs["owner"].key_path.with_suffix(".pub"), fs, bundles, model)


def rules(result: VerificationResult) -> set[tuple[str | None, str | None]]:
    return {(r.step, r.rule) for r in result.refusals}


# ---- the Verifier, fed evidence ------------------------------------------------------------


def test_verifier_fed_the_honest_evidence_lets_the_model_run(honest: Honest) -> None:
    result = Verifier(honest.layout, honest.keys).verify(honest.model, honest.evidence())
    assert result.verified, [r.to_dict() for r in result.refusals]
    assert [s.name for s in result.steps] == list(STEPS)
    assert all(s.passed and s.signers for s in result.steps)
    assert result.attestations_seen == len(STEPS)


def test_one_verifier_judges_each_evidence_set_on_its_own(honest: Honest) -> None:
    verifier = Verifier(honest.layout, honest.keys, now=datetime.now(UTC))
    refused = verifier.verify(honest.model, honest.evidence("evaluate"))
    assert ("evaluate", "threshold") in rules(refused)
    assert not refused.verified
    # the same trust material, fed the whole evidence: nothing of the refusal stays behind
    again = verifier.verify(honest.model, honest.evidence())
    assert again.verified, [r.to_dict() for r in again.refusals]
    assert again.verified_at == refused.verified_at  # the reference time is fixed once


def test_verifier_refuses_every_verdict_when_the_layout_is_not_signed_by_its_keys(
        honest: Honest) -> None:
    mallory = honest.functionaries["mallory"].public
    verifier = Verifier(honest.layout, {mallory.keyid: mallory})
    assert verifier.layout is None
    result = verifier.verify(honest.model, honest.evidence())
    assert not result.verified
    assert {r.rule for r in result.refusals} == {"layout signature"}
    assert not result.steps


def test_verifier_refuses_a_policy_naming_a_step_the_layout_lacks(honest: Honest) -> None:
    with pytest.raises(UsageError):
        Verifier(honest.layout, honest.keys,
                 requirement=AllOf([RequiredPredicate(TEST_RESULT_PREDICATE, step="evalute")]))
    with pytest.raises(UsageError):
        Verifier(honest.layout, honest.keys, final_step="packaging")


def test_verifier_refuses_a_model_whose_file_the_final_step_did_not_produce(
        honest: Honest) -> None:
    files = dict(honest.model.files)
    path = sorted(files)[0]
    files[path] = "sha256:" + "0" * 64
    result = Verifier(honest.layout, honest.keys).verify(
        ModelView(honest.model.digest, files), honest.evidence())
    assert any(r.rule == "final products" and r.artifact == path for r in result.refusals)


def test_verifier_sets_aside_a_link_signed_by_a_key_the_layout_does_not_know(
        honest: Honest) -> None:
    st = json.loads(json.dumps(_statement_of(honest.bundles["train"])))
    forged = sign_statement(st, honest.functionaries["mallory"].signer)
    evidence = [*honest.evidence("train"), Evidence("sha256:" + "f" * 64, forged)]
    result = Verifier(honest.layout, honest.keys).verify(honest.model, evidence)
    assert not result.verified
    assert ("train", "threshold") in rules(result)
    assert ("train", "signature") in rules(result)
    assert any(i.attestation == "sha256:" + "f" * 64 for i in result.ignored)


def test_verify_attestations_is_the_bundle_check_alone(honest: Honest) -> None:
    verifier = Verifier(honest.layout, honest.keys)
    assert verifier.layout is not None
    future = datetime.now(UTC) + timedelta(days=1)
    late = sign_statement(statement([("model", "ab" * 32)], TEST_RESULT_PREDICATE,
                                    {"result": "PASSED", "timeVerified":
                                     future.strftime("%Y-%m-%dT%H:%M:%SZ")}),
                          honest.functionaries["evaluator"].signer)
    evidence = [*honest.evidence(), Evidence("sha256:" + "e" * 64, late),
                Evidence("sha256:" + "d" * 64, b"not a bundle")]
    checked = verify_attestations(verifier.layout, evidence, trusted_root=None,
                                  now=datetime.now(UTC))
    assert sorted(a.id for a in checked.attestations) == sorted(e.id for e in evidence[:5])
    assert {a.predicate_type for a in checked.attestations} == {LINK_PREDICATE}
    assert [(r.rule, r.attestation) for r in checked.refusals] == [
        ("signed time", "sha256:" + "e" * 64)]
    assert {i.attestation for i in checked.ignored} == {"sha256:" + "e" * 64,
                                                        "sha256:" + "d" * 64}


def _statement_of(bundle: bytes) -> dict[str, Any]:
    import base64

    payload = json.loads(bundle)["dsseEnvelope"]["payload"]
    return json.loads(base64.b64decode(payload))  # type: ignore[no-any-return]


# ---- the trust decision imports no I/O -----------------------------------------------------

_NO_IO = """
import sys
import modelseal.verify.decision
at_import = sorted(m for m in sys.modules if m.startswith(("modelseal.oci", "modelseal.transfer",
    "modelseal.verify.evidence", "modelseal.verify.pipeline", "modelseal.verify.policy",
    "modelseal.lifecycle", "modelseal.cli", "requests", "urllib3", "oras", "yaml")))
print(at_import)
"""

_NO_IO_DECIDING = """
import hashlib, json, sys
from pathlib import Path
from securesystemslib.signer import SSlibKey
from modelseal.verify.decision import Evidence, ModelView, Verifier
data = json.loads(Path(sys.argv[1]).read_text())
owner = SSlibKey.from_dict(data["owner_keyid"], data["owner"])
model = ModelView(data["digest"], data["files"])
evidence = [Evidence(i, bytes.fromhex(b)) for i, b in data["evidence"].items()]
result = Verifier(bytes.fromhex(data["layout"]), {owner.keyid: owner}).verify(model, evidence)
assert result.verified, [r.message for r in result.refusals]
print(sorted(m for m in sys.modules if m.startswith(("modelseal.oci.registry",
    "modelseal.oci._transport", "modelseal.oci.image_layout", "modelseal.oci.referrers",
    "modelseal.transfer", "modelseal.verify.evidence", "modelseal.verify.pipeline",
    "modelseal.verify.policy", "modelseal.lifecycle", "modelseal.cli", "requests", "urllib3",
    "oras", "http.client"))))
"""


def test_trust_decision_imports_no_io() -> None:
    out = subprocess.run([sys.executable, "-c", _NO_IO], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout


def test_keyed_decision_runs_without_network_or_store_modules(honest: Honest,
                                                               tmp_path: Path) -> None:
    data = {"owner_keyid": honest.owner.keyid, "owner": honest.owner.to_dict(),
            "digest": honest.model.digest, "files": dict(honest.model.files),
            "layout": honest.layout.hex(),
            "evidence": {e.id: e.bundle.hex() for e in honest.evidence()}}
    path = tmp_path / "case.json"
    path.write_text(json.dumps(data))
    out = subprocess.run([sys.executable, "-c", _NO_IO_DECIDING, str(path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


# ---- the result reads back -----------------------------------------------------------------


def test_result_round_trips_through_json(honest: Honest) -> None:
    for evidence in (honest.evidence(), honest.evidence("train", "approve")):
        result = Verifier(honest.layout, honest.keys).verify(honest.model, evidence,
                                                             ref="reg/x@" + honest.model.digest)
        result.vsa = None if not result.verified else "sha256:" + "5" * 64
        back = VerificationResult.from_dict(json.loads(json.dumps(result.to_dict())))
        assert back == result
        assert back.verified == result.verified
        assert back.to_dict() == result.to_dict()


def test_result_read_back_derives_verified_and_never_believes_the_field() -> None:
    refused = VerificationResult(subject="sha256:" + "1" * 64,
                                 refusals=[Refusal("no", step="train", rule="threshold")])
    doc = refused.to_dict() | {"verified": True}
    assert not VerificationResult.from_dict(doc).verified


def test_result_read_back_keeps_fields_it_does_not_know() -> None:
    r = VerificationResult(subject="sha256:" + "1" * 64,
                           ignored=[Ignored("sha256:" + "2" * 64, "why", None)])
    doc = r.to_dict() | {"laterField": {"x": 1}}
    back = VerificationResult.from_dict(doc)
    assert back.to_dict() == doc
    assert replace(back, unrecognized={}) == r


@pytest.mark.parametrize("doc", [
    [], {"digest": 3}, {"ref": "x"}, {"digest": "d", "steps": [{"name": "s"}]},
    {"digest": "d", "steps": [{"name": "s", "threshold": True}]},
    {"digest": "d", "refusals": ["no"]}, {"digest": "d", "refusals": [{"rule": "r"}]},
    {"digest": "d", "warnings": [1]}, {"digest": "d", "attestations": "5"},
])
def test_result_read_back_refuses_a_malformed_document(doc: Any) -> None:
    with pytest.raises(InputError):
        VerificationResult.from_dict(doc)


def test_verify_json_output_reads_back_to_the_result_the_library_gives(
        honest: Honest, tmp_path: Path) -> None:
    ref = parse_ref(f"oci:{tmp_path / 'store'}:v1")
    publish(open_store(ref), ref, honest.model_dir, list(honest.bundles.values())[:-1])
    layout = tmp_path / "root.layout.json"
    layout.write_bytes(honest.layout)
    policy = write_policy(tmp_path / "policy.yaml", str(layout), honest.owner_key)
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # one time for both verdicts
    out = CliRunner().invoke(main, ["verify", str(ref), "--policy", str(policy), "--at", at,
                                    "--json"])
    assert out.exit_code == 10, out.output  # refused: the package step is missing
    read = VerificationResult.from_dict(json.loads(out.stdout))
    from modelseal._util.time import parse_time

    lib = verify_model(open_store(ref), ref, load_policy(policy), now=parse_time(at))
    assert read == lib
    assert ("package", "threshold") in rules(read)


# ---- layering: lifecycle sits above verify --------------------------------------------------


def _imports(package: str) -> dict[str, set[str]]:
    """module file -> every modelseal module it imports (at any depth, typing-only too)."""
    import ast

    import modelseal

    root = Path(modelseal.__file__).parent / package
    out: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        out[path.name] = {n for n in names if n.startswith("modelseal")}
    return out


@pytest.mark.parametrize("package,above", [
    ("verify", ("modelseal.lifecycle", "modelseal.cli", "modelseal.index", "modelseal.audit")),
    ("attest", ("modelseal.verify", "modelseal.lifecycle", "modelseal.cli")),
])
def test_package_imports_nothing_above_it(package: str, above: tuple[str, ...]) -> None:
    bad = {f: sorted(m for m in mods if m.startswith(above))
           for f, mods in _imports(package).items()}
    assert not {f: m for f, m in bad.items() if m}
