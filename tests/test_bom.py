"""The ML-BOM: what a model is made of, strictly valid CycloneDX, clear refusals of bad input."""

from __future__ import annotations

import base64
import hashlib
import json
import pickle
import struct
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelseal.bom.build import (
    BomValidationError,
    build_bom,
    serialize_bom,
    summarize_bom,
    validate_bom,
)
from modelseal.bom.inputs import (
    Metric,
    StepRef,
    dataset_from_path,
    load_metrics,
    load_model_card,
    model_info_from_dir,
)
from modelseal.errors import InputError, UsageError
from modelseal.formats import BOM_MEDIA_TYPE, BOM_PREDICATE

HF_README = """---
license: apache-2.0
pipeline_tag: text-classification
datasets:
  - imdb
base_model: bert-base-uncased
model-index:
- name: demo
  results:
  - task: {type: text-classification}
    dataset: {name: imdb, type: imdb, split: test}
    metrics:
    - {type: accuracy, value: 0.931}
---
# demo

## Uses

- Sorting movie reviews by sentiment

## Out-of-Scope Use

- Medical advice

## Bias, Risks, and Limitations

Reviews skew toward US films.

## Limitations

- English only
"""


def _strict_valid(doc: dict[str, object], version: str = "1.6") -> None:
    """Validated independently of build_bom, with the library's strict validator."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    sv = {"1.6": SchemaVersion.V1_6, "1.7": SchemaVersion.V1_7}[version]
    assert JsonStrictValidator(sv).validate_str(json.dumps(doc)) is None


def _fake_env(root: Path) -> Path:
    """A tiny site-packages with one distribution and its RECORD."""
    sp = root / "lib" / "python3.11" / "site-packages"
    di = sp / "tinylib-1.2.dist-info"
    di.mkdir(parents=True)
    (sp / "tinylib.py").write_text("X = 1\n")
    (di / "METADATA").write_text("Metadata-Version: 2.1\nName: tinylib\nVersion: 1.2\n"
                                 "License-Expression: MIT\n")
    digest = base64.urlsafe_b64encode(hashlib.sha256(b"X = 1\n").digest()).rstrip(b"=").decode()
    (di / "RECORD").write_text(f"tinylib.py,sha256={digest},6\n"
                               "tinylib-1.2.dist-info/METADATA,,\n"
                               "tinylib-1.2.dist-info/RECORD,,\n")
    return root


@pytest.fixture
def model(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    root.mkdir()
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    (root / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    (root / "config.json").write_text('{"layers": 2}')
    (root / "README.md").write_text(HF_README)
    return root


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    d = tmp_path / "imdb"
    d.mkdir()
    (d / "train.csv").write_text("text,label\ngood,1\n")
    (d / "test.csv").write_text("text,label\nbad,0\n")
    return d


def _full_bom(model: Path, dataset: Path, tmp_path: Path, **kw: object) -> dict[str, object]:
    from modelseal.safety import scan_model

    info = model_info_from_dir(model, "demo", "1.0")
    info.manifest_digest = "sha256:" + "ab" * 32
    info.repository = "registry.example/ml/demo"
    ds = dataset_from_path(dataset, "imdb", license="other", source="https://example.org/imdb",
                           owners=["ACME Research"], stewards=["data-team@example.org"])
    metrics = [Metric("accuracy", 0.93), Metric("accuracy", 0.95, "lang=en", 0.94, 0.96)]
    steps = [StepRef("prepare", "sha256:" + "01" * 32, "oci://registry.example/ml/demo@sha256:"
                     + "02" * 32, "https://in-toto.io/attestation/link/v0.3"),
             StepRef("train", "sha256:" + "03" * 32, None, "https://slsa.dev/provenance/v1"),
             StepRef("evaluate")]
    args: dict[str, object] = dict(
        model_card=load_model_card(model / "README.md"), datasets=[ds], metrics=metrics,
        environment=_fake_env(tmp_path / "env"), steps=steps, safety=scan_model(model))
    args.update(kw)
    return build_bom(info, **args)  # type: ignore[arg-type]


def test_full_ml_bom_is_strictly_valid_cyclonedx_1_6(model: Path, dataset: Path,
                                                      tmp_path: Path) -> None:
    doc = _full_bom(model, dataset, tmp_path)
    assert doc["specVersion"] == "1.6"
    _strict_valid(doc)


def test_model_component_has_type_hashes_purl_and_files(model: Path, dataset: Path,
                                                        tmp_path: Path) -> None:
    doc = _full_bom(model, dataset, tmp_path)
    comp = doc["metadata"]["component"]  # type: ignore[index]
    assert comp["type"] == "machine-learning-model"
    assert comp["purl"] == ("pkg:oci/demo@sha256%3A" + "ab" * 32
                            + "?repository_url=registry.example/ml/demo")
    assert comp["hashes"] == [{"alg": "SHA-256", "content": "ab" * 32}]
    files = {c["name"]: c for c in comp["components"]}
    st = files["model.safetensors"]
    assert st["hashes"][0]["content"] == hashlib.sha256(
        (model / "model.safetensors").read_bytes()).hexdigest()
    verdicts = {p["value"] for p in st["properties"] if p["name"] == "modelseal:safety:verdict"}
    assert verdicts == {"no-code-format"}


def test_model_card_carries_task_datasets_metrics_and_considerations(
        model: Path, dataset: Path, tmp_path: Path) -> None:
    card = _full_bom(model, dataset, tmp_path)["metadata"]["component"]["modelCard"]  # type: ignore[index]
    assert card["modelParameters"]["task"] == "text-classification"
    assert card["modelParameters"]["datasets"] == [{"ref": "dataset:imdb"}]
    pm = card["quantitativeAnalysis"]["performanceMetrics"]
    assert {"type": "accuracy", "value": "0.931", "slice": "imdb (test)"} in pm
    assert {"type": "accuracy", "value": "0.95", "slice": "lang=en",
            "confidenceInterval": {"lowerBound": "0.94", "upperBound": "0.96"}} in pm
    cons = card["considerations"]
    assert cons["useCases"] == ["Sorting movie reviews by sentiment"]
    assert "English only" in cons["technicalLimitations"]
    assert "Out of scope: Medical advice" in cons["technicalLimitations"]
    assert cons["ethicalConsiderations"] == [{"name": "Reviews skew toward US films."}]


def test_datasets_are_data_components_with_hash_license_source_governance(
        model: Path, dataset: Path, tmp_path: Path) -> None:
    doc = _full_bom(model, dataset, tmp_path)
    data = next(c for c in doc["components"] if c["type"] == "data")  # type: ignore[attr-defined]
    lines = "".join(f"{hashlib.sha256((dataset / n).read_bytes()).hexdigest()}  {n}\n"
                    for n in sorted(["train.csv", "test.csv"]))
    assert data["hashes"] == [{"alg": "SHA-256",
                               "content": hashlib.sha256(lines.encode()).hexdigest()}]
    assert data["licenses"]
    entry = data["data"][0]
    assert entry["type"] == "dataset" and entry["contents"]["url"] == "https://example.org/imdb"
    assert entry["governance"]["owners"] == [{"organization": {"name": "ACME Research"}}]
    assert entry["governance"]["stewards"] == [{"contact": {"email": "data-team@example.org"}}]


def test_environment_libraries_have_purl_license_and_record_hashes(
        model: Path, dataset: Path, tmp_path: Path) -> None:
    doc = _full_bom(model, dataset, tmp_path, environment_files=True)
    _strict_valid(doc)
    lib = next(c for c in doc["components"] if c["type"] == "library")  # type: ignore[attr-defined]
    assert lib["purl"] == "pkg:pypi/tinylib@1.2"
    assert lib["licenses"] == [{"license": {"id": "MIT"}}]
    assert lib["components"] == [{"type": "file", "name": "tinylib.py", "hashes": [
        {"alg": "SHA-256", "content": hashlib.sha256(b"X = 1\n").hexdigest()}]}]


def test_real_python_environment_is_listed(model: Path) -> None:
    info = model_info_from_dir(model, "demo")
    doc = build_bom(info, environment=Path(sys.prefix))
    purls = {c.get("purl", "") for c in doc["components"]}
    assert any(p.startswith("pkg:pypi/click@") for p in purls)


def test_formulation_lists_steps_with_attestation_references(model: Path, dataset: Path,
                                                             tmp_path: Path) -> None:
    doc = _full_bom(model, dataset, tmp_path)
    wf = doc["formulation"][0]["workflows"][0]  # type: ignore[index]
    names = [t["name"] for t in wf["tasks"]]
    assert names == ["prepare", "train", "evaluate"]
    ref = wf["tasks"][0]["outputs"][0]["resource"]["externalReference"]
    assert ref["type"] == "attestation"
    assert ref["url"].startswith("oci://registry.example/ml/demo@sha256:")
    assert ref["hashes"] == [{"alg": "SHA-256", "content": "01" * 32}]
    assert "outputs" not in wf["tasks"][2]


def test_spec_1_7_is_valid_too(model: Path, dataset: Path, tmp_path: Path) -> None:
    doc = _full_bom(model, dataset, tmp_path, spec_version="1.7")
    assert doc["specVersion"] == "1.7"
    _strict_valid(doc, "1.7")


def test_unknown_spec_version_is_a_usage_error(model: Path) -> None:
    with pytest.raises(UsageError, match=r"1\.5"):
        build_bom(model_info_from_dir(model, "m"), spec_version="1.5")


def test_an_invalid_bom_raises_instead_of_being_returned(model: Path) -> None:
    doc = build_bom(model_info_from_dir(model, "m"))
    doc["metadata"]["component"]["modelCard"] = {"modelParameters": {"approach": {"type": "x"}}}
    with pytest.raises(BomValidationError, match="does not validate"):
        validate_bom(doc)


@pytest.mark.parametrize("url", ["oci://r.example/ml/demo@sha256:ab cd", "http://[::1/x",
                                 "oci://r.example/%zz"])
def test_a_malformed_attestation_uri_fails_validation(model: Path, url: str) -> None:
    """The IRI syntax check (jsonschema's iri-reference, via modelseal's rfc3987_syntax
    stand-in) still refuses: a fast check that said yes to everything would pass this."""
    step = StepRef("train", "sha256:" + "01" * 32, "oci://r.example/ml/demo@sha256:" + "01" * 32)
    doc = build_bom(model_info_from_dir(model, "m"), steps=[step])
    task = doc["formulation"][0]["workflows"][0]["tasks"][0]
    task["outputs"][0]["resource"]["externalReference"]["url"] = url
    with pytest.raises(BomValidationError, match="does not validate"):
        validate_bom(doc)


_IRIS = ["oci://127.0.0.1:5000/ml/tiny@sha256:" + "ab" * 32, "oci:/tmp/a%20b@sha256:01",
         "urn:modelseal:attestation:train", "http://a b", "::", "", "a/b?c#d", "#f", "%zz",
         "http://[::1]:80/x", "http://ü.de/ä", "http://a:b@c:d/", "\x00", "../x"]


def test_iri_checks_answer_as_rfc3987_syntax_does() -> None:
    """modelseal builds the one parser rfc3987_syntax uses instead of importing it (39
    grammars): every answer must be the real module's."""
    import subprocess

    terms = ["iri", "iri_reference", "absolute_iri"]
    stub = sys.modules["rfc3987_syntax"]
    ours = [[stub.is_valid_syntax(t, v) for t in terms] for v in _IRIS]
    code = ("import json, sys, rfc3987_syntax as m; vals = json.loads(sys.argv[1]); "
            f"print(json.dumps([[m.is_valid_syntax(t, v) for t in {terms!r}] for v in vals]))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(_IRIS)], check=True,
                         capture_output=True, text=True).stdout
    assert ours == json.loads(out)
    assert any(row[1] for row in ours) and not all(row[1] for row in ours)


def test_summary_for_inspect(model: Path, dataset: Path, tmp_path: Path) -> None:
    s = summarize_bom(_full_bom(model, dataset, tmp_path))
    assert s["model"]["name"] == "demo" and s["task"] == "text-classification"
    assert [d["name"] for d in s["datasets"]] == ["imdb"]
    assert s["libraries"] == {"count": 1, "licenses": {"MIT": 1}}
    assert s["safety"]["result"] == "PASSED" and s["safety"]["unsafe_files"] == []
    assert s["steps"] == ["prepare", "train", "evaluate"]
    assert any(m.get("slice") == "lang=en" for m in s["metrics"])


def test_unsafe_file_shows_in_bom_and_summary(model: Path) -> None:
    import os

    from modelseal.safety import scan_model

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("echo",))

    (model / "evil.pkl").write_bytes(pickle.dumps(Evil()))
    doc = build_bom(model_info_from_dir(model, "m"), safety=scan_model(model))
    s = summarize_bom(doc)
    assert s["safety"]["result"] == "FAILED" and s["safety"]["unsafe_files"] == ["evil.pkl"]


def test_serialize_json_round_trips_and_xml_is_refused(model: Path) -> None:
    doc = build_bom(model_info_from_dir(model, "m"))
    assert json.loads(serialize_bom(doc)) == doc
    with pytest.raises(UsageError, match="XML"):
        serialize_bom(doc, "xml")
    assert BOM_PREDICATE == "https://cyclonedx.org/bom"
    assert BOM_MEDIA_TYPE == "application/vnd.cyclonedx+json"


# ---- model card and metrics inputs ------------------------------------------------------------


def test_model_card_from_yaml_and_json(tmp_path: Path) -> None:
    y = tmp_path / "card.yaml"
    y.write_text("task: image-classification\nmodel_architecture: ResNet-18\n"
                 "approach: supervised\nlimitations: [low light]\n"
                 "ethical_considerations:\n  - name: faces\n    mitigation: blur\n"
                 "intended_use: [sorting photos]\nusers: [photographers]\n")
    card = load_model_card(y)
    assert card["model_architecture"] == "ResNet-18" and card["approach"] == "supervised"
    assert card["ethical_considerations"] == [{"name": "faces", "mitigation": "blur"}]
    assert card["use_cases"] == ["sorting photos"]
    j = tmp_path / "card.json"
    j.write_text(json.dumps({"task": "t", "metrics": {"f1": 0.5}}))
    assert load_model_card(j)["metrics"] == [Metric("f1", 0.5)]


@pytest.mark.parametrize("name,text,match", [
    ("card.yaml", "task: [unclosed\n", "not valid"),
    ("card.yaml", "- just\n- a list\n", "must be a mapping"),
    ("card.yaml", "limitations: 42\n", "'limitations'"),
    ("card.yaml", "approach: magic\n", "'approach'"),
    ("card.json", "{not json", "not valid"),
    ("README.md", "---\nlicense: [mit\n---\n# x\n", "front matter is not valid YAML"),
    ("README.md", "---\nlicense: mit\n", "never ends"),
])
def test_malformed_model_card_is_refused_clearly(tmp_path: Path, name: str, text: str,
                                                 match: str) -> None:
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(InputError, match=match):
        load_model_card(p)


def test_metrics_file_with_slices(tmp_path: Path) -> None:
    p = tmp_path / "metrics.json"
    p.write_text(json.dumps({"accuracy": 0.93, "slices": {"lang=de": {"accuracy": 0.9}}}))
    assert load_metrics(p) == [Metric("accuracy", 0.93), Metric("accuracy", 0.9, "lang=de")]
    p.write_text(json.dumps([{"type": "f1", "value": 1, "slice": "all"}]))
    assert load_metrics(p) == [Metric("f1", 1.0, "all")]


@pytest.mark.parametrize("obj,key", [
    ({"accuracy": "high"}, "accuracy"),
    ({"f1": True}, "f1"),
    ({"slices": {"lang=de": {"recall": None}}}, "lang=de/recall"),
    ([{"type": "loss", "value": "NaN"}], "loss"),
])
def test_non_numeric_metric_names_the_key(tmp_path: Path, obj: object, key: str) -> None:
    p = tmp_path / "metrics.json"
    p.write_text(json.dumps(obj))
    with pytest.raises(InputError, match=f"'{key}'"):
        load_metrics(p)


def test_missing_dataset_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        dataset_from_path(tmp_path / "nope")


def test_environment_that_is_not_python_is_refused(model: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for env in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(InputError, match=r"Python environment|does not exist"):
            build_bom(model_info_from_dir(model, "m"), environment=env)


# ---- command ------------------------------------------------------------------------------------


def test_bom_command_writes_a_valid_bom(model: Path, dataset: Path, tmp_path: Path) -> None:
    from modelseal.cli.commands.bom_cmds import bom

    metrics = tmp_path / "m.json"
    metrics.write_text('{"accuracy": 0.9}')
    out = tmp_path / "bom.json"
    res = CliRunner().invoke(bom, [
        str(model), "--name", "demo", "--version", "2", "--model-card",
        str(model / "README.md"), "--dataset", f"{dataset}=imdb", "--metrics", str(metrics),
        "--environment", str(_fake_env(tmp_path / "env")),
        "--step", "train=sha256:" + "aa" * 32 + "@oci://r/x", "-o", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    _strict_valid(doc)
    assert doc["metadata"]["component"]["version"] == "2"
    assert doc["formulation"][0]["workflows"][0]["tasks"][0]["name"] == "train"


@pytest.mark.parametrize("extra,match", [
    (["--dataset", "/nonexistent/data"], "does not exist"),
    (["--metrics", "BAD"], "non-numeric"),
    (["--environment", "EMPTY"], "not a Python environment"),
    (["--model-card", "CARD"], "not valid"),
])
def test_bom_command_bad_input_exits_2_and_writes_nothing(
        model: Path, tmp_path: Path, extra: list[str], match: str) -> None:
    from modelseal.cli.commands.bom_cmds import bom

    (tmp_path / "bad.json").write_text('{"accuracy": "n/a"}')
    (tmp_path / "empty").mkdir()
    (tmp_path / "card.yaml").write_text("task: [\n")
    subst = {"BAD": str(tmp_path / "bad.json"), "EMPTY": str(tmp_path / "empty"),
             "CARD": str(tmp_path / "card.yaml")}
    out = tmp_path / "bom.json"
    res = CliRunner().invoke(bom, [str(model), *[subst.get(a, a) for a in extra],
                                   "-o", str(out)])
    assert res.exit_code == 2, res.output
    assert match in res.stderr
    assert not out.exists()
