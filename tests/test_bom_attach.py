"""The ML-BOM of a pushed model and the signed safety result, against a real registry: what is
attached is valid CycloneDX and verifies with the signer's key; bad input attaches nothing; an
unsafe model leaves signed evidence and names the callable."""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from modelseal.attest.attachments import list_attestations
from modelseal.attest.bundle import verify_bundle
from modelseal.attest.signers import keygen, load_public_key
from modelseal.formats import (
    BOM_MEDIA_TYPE,
    BOM_PREDICATE,
    BUNDLE_MEDIA_TYPE,
    LINK_PREDICATE,
    SAFETY_PREDICATE,
)
from modelseal.oci import open_store
from modelseal.oci.referrers import fetch_referrer_blob, list_referrers
from modelseal.refs import parse_ref
from registry_server import RegistryServer
from test_bom import HF_README, _fake_env, _strict_valid

SYSTEM = {"os.system", "posix.system", "nt.system"}


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def _cli(*args: str | Path) -> Result:
    from modelseal.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory with a key, a clean model, a dataset and metrics; the cwd of the test."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODELSEAL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MODELSEAL_SIGNER", raising=False)
    (tmp_path / "keys").mkdir()
    keygen(str(tmp_path / "keys" / "erin"))
    m = tmp_path / "model"
    (m / "src").mkdir(parents=True)
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    (m / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    (m / "config.json").write_text('{"layers": 2}')
    (m / "README.md").write_text(HF_README)
    (m / "src" / "infer.py").write_text("def f(x):\n    return x\n")
    (tmp_path / "imdb.csv").write_text("text,label\ngood,1\n")
    (tmp_path / "metrics.json").write_text('{"accuracy": 0.93, "slices": {"lang=en": '
                                           '{"accuracy": 0.95}}}')
    return tmp_path


def _keys(work: Path) -> dict[str, Any]:
    pub = load_public_key(work / "keys" / "erin.pub")
    return {pub.keyid: pub}


def _pushed(work: Path, registry: RegistryServer, *, scan: bool = True) -> str:
    """Scan (signed) and push the model with its attestations; the REF."""
    ref = f"{registry.host}/ml/tiny:v1"
    if scan:
        res = _cli("scan", "model", "--signer", "keys/erin.key")
        assert res.exit_code == 0, res.output
    atts = ["--attestations", ".modelseal/attestations"] if scan else []
    res = _cli("push", "model", ref, "--name", "tiny", "--version", "1.0", "--signer",
               "keys/erin.key", *atts)
    assert res.exit_code == 0, res.output
    return ref


def _referrers(ref: str) -> list[Any]:
    r = parse_ref(ref)
    store = open_store(r)
    digest = store.get_manifest(r.reference)[2]
    return list_referrers(store, digest)


# ---- scan --signer ----------------------------------------------------------------------------


def test_scan_signer_on_malicious_pickle_exits_10_and_writes_failed_evidence(work: Path) -> None:
    (work / "model" / "evil.pkl").write_bytes(pickle.dumps(_Evil(), protocol=2))
    res = _cli("scan", "model", "--signer", "keys/erin.key", "--attestations-dir", "atts")
    assert res.exit_code == 10
    assert "evil.pkl imports" in res.stderr
    assert any(s in res.stderr for s in SYSTEM)
    [bundle] = list((work / "atts").iterdir())
    assert bundle.name.startswith("scan.") and bundle.name.endswith(".intoto.sigstore.json")
    vs = verify_bundle(bundle.read_bytes(), keys=_keys(work))
    assert vs.predicate_type == SAFETY_PREDICATE
    pred = vs.statement["predicate"]
    assert pred["result"] == "FAILED"
    evil = next(f for f in pred["files"] if f["path"] == "evil.pkl")
    assert evil["verdict"] == "unsafe"
    assert {x["callable"] for x in evil["findings"]} & SYSTEM
    # subjects are the model's files named as push names its layers
    assert {n for n, _ in vs.subjects} == {"evil.pkl", "model.safetensors", "config.json",
                                           "README.md", "src/infer.py"}
    assert not list((work / "atts").glob(".*.tmp"))  # written atomically


def test_scan_with_a_bad_key_fails_before_writing_anything(work: Path) -> None:
    res = _cli("scan", "model", "--signer", "keys/nobody.key", "--attestations-dir", "atts")
    assert res.exit_code == 6  # SigningError
    assert not (work / "atts").exists()


# ---- bom REF --signer --attach ----------------------------------------------------------------


def _bom_args(ref: str, work: Path) -> list[str | Path]:
    return ["bom", ref, "--signer", "keys/erin.key", "--attach", "--model-card",
            "model/README.md", "--dataset", "imdb.csv=imdb", "--metrics", "metrics.json",
            "--environment", _fake_env(work / "env")]


def test_bom_ref_is_attached_signed_and_plain(work: Path, registry: RegistryServer) -> None:
    ref = _pushed(work, registry)
    before = _referrers(ref)
    res = _cli(*_bom_args(ref, work), "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    after = _referrers(ref)
    assert len(after) == len(before) + 2

    r = parse_ref(ref)
    store = open_store(r)
    digest = out["digest"]
    # the plain referrer: CycloneDX JSON, strictly valid, for SBOM tools
    [plain] = list_referrers(store, digest, BOM_MEDIA_TYPE)
    assert plain.digest == out["attached"]["bom"]
    blob, manifest = fetch_referrer_blob(store, plain, digest)
    assert manifest["layers"][0]["mediaType"] == BOM_MEDIA_TYPE  # type: ignore[index]
    doc = json.loads(blob)
    _strict_valid(doc)
    comp = doc["metadata"]["component"]
    assert comp["type"] == "machine-learning-model"
    assert comp["purl"] == (f"pkg:oci/tiny@sha256%3A{digest.partition(':')[2]}"
                            f"?repository_url={registry.host}/ml/tiny")
    assert comp["hashes"] == [{"alg": "SHA-256", "content": digest.partition(":")[2]}]
    files = {c["name"]: c["hashes"][0]["content"] for c in comp["components"]}
    layers = {la["annotations"]["org.cncf.model.filepath"]: la["digest"].partition(":")[2]
              for la in json.loads(store.get_manifest(digest)[0])["layers"]}
    assert files == layers
    # safety from the attached (signed) scan; steps from the attached attestations
    props = {p["name"]: p["value"] for p in comp["properties"]}
    assert props["modelseal:safety:result"] == "PASSED"
    assert out["safety"].startswith("attestation sha256:")
    wf = doc["formulation"][0]["workflows"][0]
    tasks = {t["name"]: t for t in wf["tasks"]}
    assert list(tasks) == ["model-safety", "package"]
    atts = {a.descriptor.digest: a.predicate_type
            for a in list_attestations(store, digest)}
    for t in tasks.values():
        for o in t["outputs"]:
            er = o["resource"]["externalReference"]
            url_digest = er["url"].rpartition("@")[2]
            assert er["url"].startswith(f"oci://{registry.host}/ml/tiny@sha256:")
            assert atts[url_digest] == er["comment"]
            assert er["hashes"][0]["content"] == url_digest.partition(":")[2]
    assert {o["resource"]["externalReference"]["comment"] for o in tasks["package"]["outputs"]} \
        == {"https://in-toto.io/attestation/link/v0.3", "https://model_signing/signature/v1.0"}

    # the signed one: a bundle whose Statement verifies with erin's key and is about the model
    [signed] = list_attestations(store, digest, predicate_type=BOM_PREDICATE, fetch=True)
    assert signed.descriptor.digest == out["attached"]["attestation"]
    assert signed.descriptor.artifact_type == BUNDLE_MEDIA_TYPE
    assert signed.bundle is not None
    vs = verify_bundle(signed.bundle, keys=_keys(work))
    assert vs.predicate_type == BOM_PREDICATE
    assert vs.statement["predicate"]["serialNumber"] == doc["serialNumber"]
    subjects = dict(vs.subjects)
    assert subjects[f"{registry.host}/ml/tiny"] == digest.partition(":")[2]
    assert {k: v for k, v in subjects.items() if k in layers} == layers
    assert (work / out["signed"]).is_file()


def test_inspect_bom_shows_datasets_metrics_libraries_and_safety(
        work: Path, registry: RegistryServer) -> None:
    ref = _pushed(work, registry)
    assert _cli(*_bom_args(ref, work)).exit_code == 0
    res = _cli("inspect", ref, "--bom")
    assert res.exit_code == 0, res.output
    for text in ("imdb", "accuracy", "0.93", "lang=en", "libraries: 1",
                 "MIT", "English only", "safety: PASSED", "text-classification"):
        assert text in res.stdout, text
    res = _cli("inspect", ref, "--bom", "--json")
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert got["source"] == "referrer"
    assert [d["name"] for d in got["bom"]["datasets"]] == ["imdb"]
    assert {(m["type"], m.get("slice")) for m in got["bom"]["metrics"]} >= {
        ("accuracy", None), ("accuracy", "lang=en")}
    assert got["bom"]["libraries"] == {"count": 1, "licenses": {"MIT": 1}}


def test_inspect_bom_reads_the_attestation_when_there_is_no_plain_referrer(
        work: Path, registry: RegistryServer) -> None:
    from modelseal.attest.attachments import attach_bundle, subject_of
    from modelseal.bom.remote import find_attached_bom

    ref = _pushed(work, registry, scan=False)
    res = _cli("bom", ref, "--signer", "keys/erin.key", "--attestations-dir", "atts", "-o",
               "bom.json")
    assert res.exit_code == 0, res.output
    assert len(_referrers(ref)) == 2  # nothing attached without --attach
    r = parse_ref(ref)
    store = open_store(r)
    digest = store.get_manifest(r.reference)[2]
    assert find_attached_bom(store, digest) is None
    assert _cli("inspect", ref, "--bom").exit_code == 3
    attach_bundle(store, subject_of(store, digest), next((work / "atts").iterdir()).read_bytes())
    found = find_attached_bom(store, digest)
    assert found is not None and found.source == "attestation"
    assert found.document["serialNumber"] == json.loads((work / "bom.json").read_text())[
        "serialNumber"]


def test_bom_scan_dir_must_match_the_manifest(work: Path, registry: RegistryServer) -> None:
    ref = _pushed(work, registry, scan=False)
    res = _cli("bom", ref, "--scan", "model", "-o", "bom.json")
    assert res.exit_code == 0, res.output
    comp = json.loads((work / "bom.json").read_text())["metadata"]["component"]
    verdicts = {c["name"]: {p["name"]: p["value"] for p in c["properties"]}
                for c in comp["components"]}
    assert verdicts["model.safetensors"]["modelseal:safety:verdict"] == "no-code-format"
    (work / "model" / "config.json").write_text('{"layers": 3}')
    before = _referrers(ref)
    res = _cli("bom", ref, "--scan", "model", "--signer", "keys/erin.key", "--attach")
    assert res.exit_code == 2
    assert "not a copy of model" in res.stderr and "config.json" in res.stderr
    assert _referrers(ref) == before


@pytest.mark.parametrize("change,match", [
    (["--model-card", "card.yaml"], "not valid"),
    (["--dataset", "missing.csv"], "does not exist"),
    (["--metrics", "bad.json"], "non-numeric"),
    (["--environment", "empty"], "not a Python environment"),
])
def test_bad_input_attaches_nothing(work: Path, registry: RegistryServer, change: list[str],
                                    match: str) -> None:
    (work / "card.yaml").write_text("task: [\n")
    (work / "bad.json").write_text('{"accuracy": "high"}')
    (work / "empty").mkdir()
    ref = _pushed(work, registry)
    before = _referrers(ref)
    args = _bom_args(ref, work)
    i = args.index(change[0])
    args[i + 1] = change[1]
    res = _cli(*args)
    assert res.exit_code == 2, res.output
    assert match in res.stderr
    assert _referrers(ref) == before
    assert not list((work / ".modelseal" / "attestations").glob("bom.*"))


def test_attach_needs_a_ref(work: Path) -> None:
    res = _cli("bom", "model", "--attach")
    assert res.exit_code == 2
    assert "--attach needs a REF" in res.stderr


def test_formulation_follows_the_pipeline_data_flow(tmp_path: Path,
                                                    registry: RegistryServer) -> None:
    from modelseal.bom.remote import bom_for_ref
    from pipeline_fixtures import STEPS, honest_pipeline

    p = honest_pipeline(tmp_path, registry.host)
    built = bom_for_ref(p.store, p.ref)
    assert [s.name for s in built.steps] == list(STEPS)
    assert built.safety is None
    tasks = built.document["formulation"][0]["workflows"][0]["tasks"]
    assert [t["name"] for t in tasks] == list(STEPS)


def test_metrics_come_from_the_attached_evaluation_when_not_given(
        work: Path, registry: RegistryServer) -> None:
    from modelseal.attest.attachments import attach_bundle, subject_of
    from modelseal.attest.bundle import sign_statement
    from modelseal.attest.signers import load_signer
    from modelseal.attest.statement import evaluation_predicate, parse_threshold, statement
    from modelseal.formats import TEST_RESULT_PREDICATE

    ref = _pushed(work, registry, scan=False)
    r = parse_ref(ref)
    store = open_store(r)
    digest = store.get_manifest(r.reference)[2]
    pred = evaluation_predicate({"accuracy": 0.91, "slices": {"short": {"accuracy": 0.8}}},
                                [parse_threshold("accuracy>=0.9")])
    files = [(la["annotations"]["org.cncf.model.filepath"], la["digest"].partition(":")[2])
             for la in json.loads(store.get_manifest(digest)[0])["layers"]]
    bundle = sign_statement(statement(files, TEST_RESULT_PREDICATE, pred),
                            load_signer(str(work / "keys" / "erin.key")))
    att = attach_bundle(store, subject_of(store, digest), bundle)
    res = _cli("bom", ref, "--json", "-o", "bom.json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["metrics"] == f"attestation {att.descriptor.digest}"
    card = json.loads((work / "bom.json").read_text())["metadata"]["component"]["modelCard"]
    got = {(m["type"], m.get("slice"), m["value"])
           for m in card["quantitativeAnalysis"]["performanceMetrics"]}
    assert got == {("accuracy", None, "0.91"), ("accuracy", "short", "0.8")}
    res = _cli("bom", ref, "--metrics", "metrics.json", "--json", "-o", "bom.json")
    assert json.loads(res.stdout)["metrics"] == "given"


def test_two_package_links_make_one_package_step_referencing_both(
        work: Path, registry: RegistryServer) -> None:
    """A second push signed by another key, from the folder holding the first push's link,
    attaches a second package link: the pipeline still lists `package` once, and the BOM
    references both links."""
    ref = _pushed(work, registry)
    keygen(str(work / "keys" / "bob"))
    res = _cli("push", "model", ref, "--name", "tiny", "--version", "1.0", "--signer",
               "keys/bob.key", "--attestations", ".modelseal/attestations")
    assert res.exit_code == 0, res.output
    r = parse_ref(ref)
    store = open_store(r)
    digest = store.get_manifest(r.reference)[2]
    links = {i.descriptor.digest for i in list_attestations(store, digest)
             if i.predicate_type == LINK_PREDICATE}
    assert len(links) == 2

    res = _cli("bom", ref, "--json", "-o", "bom.json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["steps"] == ["model-safety", "package"]
    doc = json.loads((work / "bom.json").read_text())
    _strict_valid(doc)
    [wf] = doc["formulation"][0]["workflows"]
    assert [t["name"] for t in wf["tasks"]] == ["model-safety", "package"]
    package = wf["tasks"][1]
    referenced = {h["content"] for o in package["outputs"]
                  for h in o["resource"]["externalReference"]["hashes"]}
    assert {d.partition(":")[2] for d in links} <= referenced
    assert wf["taskDependencies"] == [{"ref": package["bom-ref"],
                                       "dependsOn": [wf["tasks"][0]["bom-ref"]]}]
