"""CycloneDX ML-BOM of a model: assembled from its inputs and validated before anyone sees it.

cyclonedx-python-lib builds what it models (the model component with its files and hashes, the
datasets and the training environment's Python distributions as components, dependencies,
properties). It does not model ``modelCard``, ``data`` or ``formulation``: :func:`_add_unmodeled`
adds them to the serialized JSON, the one place that does, and the final document is then
validated with the library's strict JSON validator. An invalid BOM raises; it is never returned.

The inputs (model files, datasets, model card, metrics, steps) are read in
:mod:`modelseal.bom.inputs`, the environment in :mod:`modelseal.bom.environment`.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import uuid
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelseal.bom.environment import PyDist, python_distributions
from modelseal.bom.inputs import (
    DatasetInfo,
    Metric,
    ModelInfo,
    StepRef,
    normalize_model_card,
)
from modelseal.digest import DIR_DIGEST_SCHEME, dir_digest
from modelseal.errors import ModelsealError, UsageError

if TYPE_CHECKING:
    from modelseal.safety import SafetyReport

SPEC_VERSIONS = ("1.6", "1.7")

_P = "modelseal:"  # property namespace


class BomValidationError(ModelsealError):
    """The BOM modelseal built does not validate against the CycloneDX schema (a bug)."""

    exit_code = 1


# --------------------------------------------------------------------------------------------
# building


def _schema_version(spec_version: str) -> Any:
    from cyclonedx.schema import SchemaVersion

    try:
        return {"1.6": SchemaVersion.V1_6, "1.7": SchemaVersion.V1_7}[spec_version]
    except KeyError as e:
        raise UsageError(f"CycloneDX spec version {spec_version!r} is not supported; "
                         f"choose one of {', '.join(SPEC_VERSIONS)}") from e


def _license_objs(expr: str | None) -> list[Any]:
    if not expr:
        return []
    try:
        from cyclonedx.contrib.license.factories import LicenseFactory
    except ImportError:  # cyclonedx-python-lib < 11
        from cyclonedx.factory.license import LicenseFactory
    return [LicenseFactory().make_from_string(expr)]


def _sha(hexd: str) -> Any:
    from cyclonedx.model import HashAlgorithm, HashType

    return HashType(alg=HashAlgorithm.SHA_256, content=hexd)


def _prop(name: str, value: str) -> Any:
    from cyclonedx.model import Property

    return Property(name=_P + name, value=value)


_TASK_TYPES = (("prep", "build"), ("data", "build"), ("train", "build"), ("fine", "build"),
               ("eval", "test"), ("test", "test"), ("scan", "scan"), ("safety", "scan"),
               ("package", "deliver"), ("push", "deliver"), ("sign", "deliver"),
               ("approv", "release"), ("promot", "release"), ("release", "release"),
               ("deploy", "deploy"))


def task_type(name: str) -> str:
    low = name.lower()
    return next((t for word, t in _TASK_TYPES if word in low), "other")


def _ref_id(prefix: str, name: str) -> str:
    return f"{prefix}:" + re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")


def build_bom(
    model: ModelInfo,
    *,
    model_card: dict[str, Any] | None = None,
    datasets: list[DatasetInfo] | None = None,
    metrics: list[Metric] | None = None,
    environment: Path | None = None,
    steps: list[StepRef] | None = None,
    safety: SafetyReport | None = None,
    spec_version: str = "1.6",
    environment_files: bool = False,
) -> dict[str, Any]:
    """Build and strictly validate a CycloneDX ML-BOM; returns the JSON document as a dict.

    ``environment_files`` adds every RECORD file hash of every distribution as nested ``file``
    components (complete, but large and slow to validate on a big environment); without it each
    distribution carries the sha256 of its RECORD, which pins the same hashes.
    """
    from cyclonedx.model import ExternalReference, ExternalReferenceType, XsUri
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output import make_outputter
    from cyclonedx.schema import OutputFormat
    from packageurl import PackageURL

    sv = _schema_version(spec_version)
    card = normalize_model_card(model_card) if model_card is not None else {}
    datasets = list(datasets or [])
    steps = list(steps or [])
    dists = python_distributions(environment) if environment is not None else []

    # model component, its files nested as `file` components
    safety_by_path = {f.path: f for f in safety.files} if safety is not None else {}
    file_comps = []
    for mf in sorted(model.files, key=lambda f: f.path):
        props = [_prop("size", str(mf.size))]
        fs = safety_by_path.get(mf.path)
        if fs is not None:
            props += [_prop("safety:format", fs.format), _prop("safety:verdict", fs.verdict)]
            props += [_prop("safety:finding",
                            f"{x.callable} ({x.severity})" + (f" in {x.member}" if x.member
                                                              else ""))
                      for x in fs.findings if x.severity != "innocuous"]
        file_comps.append(Component(type=ComponentType.FILE, name=mf.path,
                                    bom_ref=_ref_id("file", mf.path), hashes=[_sha(mf.sha256)],
                                    properties=props))
    mprops = []
    if model.manifest_digest:
        mhash = model.manifest_digest.split(":", 1)[-1]
        mprops.append(_prop("hash-scheme", "oci-manifest"))
    else:
        mhash = dir_digest((f.path, f.sha256) for f in model.files)
        mprops.append(_prop("hash-scheme", DIR_DIGEST_SCHEME))
    if safety is not None:
        mprops += [_prop("safety:result", "PASSED" if safety.ok else "FAILED"),
                   _prop("safety:scanner", f"{safety.scanner} {safety.scanner_version}")]
    purl = model.purl()
    model_comp = Component(
        type=ComponentType.MACHINE_LEARNING_MODEL, name=model.name, version=model.version,
        bom_ref="model", description=model.description or card.get("description"),
        hashes=[_sha(mhash)], licenses=_license_objs(card.get("license")),
        purl=PackageURL.from_string(purl) if purl else None, components=file_comps,
        properties=mprops, tags=card.get("tags") or None)

    # datasets: given ones (hashed) first, then those only named by the model card
    by_name = {d.name: d for d in datasets}
    for cd in card.get("datasets", []):
        meta = {k: cd[k] for k in ("license", "source", "description", "classification")
                if isinstance(cd.get(k), str)}
        if isinstance(cd.get("url"), str):
            meta.setdefault("source", cd["url"])
        if cd["name"] in by_name:
            d = by_name[cd["name"]]
            for k, v in meta.items():
                if getattr(d, k) is None:
                    setattr(d, k, v)
            for k in ("owners", "stewards", "custodians"):
                if not getattr(d, k) and isinstance(cd.get(k), list):
                    setattr(d, k, [str(x) for x in cd[k]])
        else:
            nd = DatasetInfo(name=cd["name"], **meta)
            for k in ("owners", "stewards", "custodians"):
                if isinstance(cd.get(k), list):
                    setattr(nd, k, [str(x) for x in cd[k]])
            by_name[nd.name] = nd
            datasets.append(nd)
    data_comps = []
    for d in datasets:
        props = [_prop("dataset:path", d.path)] if d.path else []
        if d.files is not None:
            props.append(_prop("dataset:files", str(d.files)))
        if d.sha256 and d.hash_scheme:
            props.append(_prop("hash-scheme", d.hash_scheme))
        ext = [ExternalReference(type=ExternalReferenceType.DISTRIBUTION, url=XsUri(d.source))] \
            if d.source else []
        data_comps.append(Component(
            type=ComponentType.DATA, name=d.name, bom_ref=_ref_id("dataset", d.name),
            hashes=[_sha(d.sha256)] if d.sha256 else [], licenses=_license_objs(d.license),
            external_references=ext, properties=props, description=d.description))

    lib_comps = []
    for pd in dists:
        norm = re.sub(r"[-_.]+", "-", pd.name).lower()
        purl_lib = PackageURL(type="pypi", name=norm, version=pd.version)
        props = [_prop("role", "training-environment")]
        if pd.record_sha256:
            props += [_prop("python:record-sha256", pd.record_sha256),
                      _prop("python:record-files", str(len(pd.files)))]
        lib_comps.append(Component(
            type=ComponentType.LIBRARY, name=pd.name, version=pd.version,
            bom_ref=str(purl_lib), purl=purl_lib, licenses=_license_objs(pd.license),
            properties=props))

    ext_refs = []
    for st in steps:
        for a in st.attestations():
            ext_refs.append(ExternalReference(
                type=ExternalReferenceType.ATTESTATION,
                url=XsUri(a.ref or f"urn:modelseal:attestation:{st.name}"),
                comment=f"step {st.name}" + (f" ({a.predicate_type})" if a.predicate_type
                                             else ""),
                hashes=[_sha(a.digest.split(":", 1)[-1])] if a.digest else []))

    tool = Component(type=ComponentType.APPLICATION, name="modelseal", version=_own_version())
    bom_meta = BomMetaData(component=model_comp, timestamp=_dt.datetime.now(_dt.UTC).replace(
        microsecond=0))
    bom_meta.tools.components.add(tool)
    bom = Bom(metadata=bom_meta, components=[*data_comps, *lib_comps], external_references=ext_refs,
              serial_number=uuid.uuid4())
    if data_comps or lib_comps:  # the model was formed from its data and its training libraries
        bom.register_dependency(model_comp, [*data_comps, *lib_comps])

    try:
        text = make_outputter(bom, OutputFormat.JSON, sv).output_as_string()
    except Exception as e:  # the library refuses models it cannot express
        raise BomValidationError(f"cannot serialize the BOM: {e}") from e
    doc: dict[str, Any] = json.loads(text)
    if purl:  # purl-spec's OCI form spells sha256%3A; packageurl-python writes a bare colon
        doc["metadata"]["component"]["purl"] = purl
    _add_unmodeled(doc, card=card, datasets=datasets, metrics=list(metrics or []),
                   steps=steps, dists=dists if environment_files else [])
    validate_bom(doc, spec_version)
    return doc


def _own_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("modelseal")
    except PackageNotFoundError:  # pragma: no cover
        return "0"


def _party(name: str) -> dict[str, Any]:
    if "@" in name and " " not in name.strip():
        return {"contact": {"email": name.strip()}}
    return {"organization": {"name": name}}


def _add_unmodeled(doc: dict[str, Any], *, card: dict[str, Any], datasets: list[DatasetInfo],
                   metrics: list[Metric], steps: list[StepRef],
                   dists: list[PyDist]) -> None:
    """The one place that writes what cyclonedx-python-lib does not model: ``modelCard``,
    component ``data``, ``formulation`` (and, on request, per-file hashes of distributions)."""
    # data
    comps = {c.get("bom-ref"): c for c in doc.get("components", [])}
    for d in datasets:
        c = comps.get(_ref_id("dataset", d.name))
        if c is None:
            continue
        entry: dict[str, Any] = {"type": "dataset", "name": d.name}
        if d.source:
            entry["contents"] = {"url": d.source}
        if d.classification:
            entry["classification"] = d.classification
        if d.description:
            entry["description"] = d.description
        gov = {k: [_party(x) for x in getattr(d, k)] for k in ("owners", "stewards",
                                                               "custodians")
               if getattr(d, k)}
        if gov:
            entry["governance"] = gov
        c["data"] = [entry]

    # modelCard
    mc: dict[str, Any] = {}
    params: dict[str, Any] = {}
    if card.get("approach"):
        params["approach"] = {"type": card["approach"]}
    for k, jk in (("task", "task"), ("architecture_family", "architectureFamily"),
                  ("model_architecture", "modelArchitecture")):
        if card.get(k):
            params[jk] = card[k]
    if datasets:
        params["datasets"] = [{"ref": _ref_id("dataset", d.name)} for d in datasets]
    if params:
        mc["modelParameters"] = params
    all_metrics = [*card.get("metrics", []), *metrics]
    if all_metrics:
        pm = []
        for m in all_metrics:
            e: dict[str, Any] = {"type": m.type, "value": _fmt_num(m.value)}
            if m.slice is not None:
                e["slice"] = m.slice
            if m.lower is not None or m.upper is not None:
                ci = {}
                if m.lower is not None:
                    ci["lowerBound"] = _fmt_num(m.lower)
                if m.upper is not None:
                    ci["upperBound"] = _fmt_num(m.upper)
                e["confidenceInterval"] = ci
            pm.append(e)
        mc["quantitativeAnalysis"] = {"performanceMetrics": pm}
    cons: dict[str, Any] = {}
    for k, jk in (("users", "users"), ("use_cases", "useCases"),
                  ("limitations", "technicalLimitations"),
                  ("tradeoffs", "performanceTradeoffs")):
        if card.get(k):
            cons[jk] = list(card[k])
    if card.get("out_of_scope"):
        cons.setdefault("technicalLimitations", []).extend(
            f"Out of scope: {x}" for x in card["out_of_scope"])
    if card.get("ethical_considerations"):
        cons["ethicalConsiderations"] = [
            {"name": e["name"], **({"mitigationStrategy": e["mitigation"]}
                                   if e.get("mitigation") else {})}
            for e in card["ethical_considerations"]]
    if cons:
        mc["considerations"] = cons
    mprops = []
    for k in ("base_model", "library"):
        if card.get(k):
            mprops.append({"name": f"{_P}model-card:{k}", "value": card[k]})
    if mprops:
        mc["properties"] = mprops
    if mc:
        mc["bom-ref"] = "model-card"
        doc["metadata"]["component"]["modelCard"] = mc

    # formulation: the pipeline steps, each pointing at its attestation
    if steps:
        tasks = []
        for i, st in enumerate(steps):
            t: dict[str, Any] = {"bom-ref": _ref_id("task", f"{i}-{st.name}"), "uid": st.name,
                                 "name": st.name, "taskTypes": [task_type(st.name)]}
            outputs = []
            for a in st.attestations():
                er: dict[str, Any] = {
                    "type": "attestation",
                    "url": a.ref or f"urn:modelseal:attestation:{st.name}"}
                if a.predicate_type:
                    er["comment"] = a.predicate_type
                if a.digest:
                    er["hashes"] = [{"alg": "SHA-256", "content": a.digest.split(":", 1)[-1]}]
                outputs.append({"type": "attestation", "resource": {"externalReference": er}})
            if outputs:
                t["outputs"] = outputs
            tasks.append(t)
        deps = [{"ref": tasks[i]["bom-ref"], "dependsOn": [tasks[i - 1]["bom-ref"]]}
                for i in range(1, len(tasks))]
        wf: dict[str, Any] = {
            "bom-ref": "workflow:pipeline", "uid": "pipeline", "name": "model pipeline",
            "taskTypes": sorted({t["taskTypes"][0] for t in tasks}), "tasks": tasks}
        if deps:
            wf["taskDependencies"] = deps
        doc["formulation"] = [{"bom-ref": "formulation", "workflows": [wf]}]

    # per-file hashes of the environment's distributions, on request
    if dists:
        by_ref = {c.get("bom-ref"): c for c in doc.get("components", [])}
        for pd in dists:
            norm = re.sub(r"[-_.]+", "-", pd.name).lower()
            c = next((v for k, v in by_ref.items()
                      if isinstance(k, str) and k.startswith(f"pkg:pypi/{norm}@")), None)
            if c is not None and pd.files:
                c["components"] = [{"type": "file", "name": p,
                                    "hashes": [{"alg": "SHA-256", "content": h}]}
                                   for p, h in pd.files]


def _fmt_num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v))


def validate_bom(doc: dict[str, Any], spec_version: str | None = None) -> None:
    """Validate a BOM document with cyclonedx-python-lib's strict JSON validator; raise
    :class:`BomValidationError` listing the first errors."""
    from cyclonedx.validation.json import JsonStrictValidator

    sv = _schema_version(spec_version or str(doc.get("specVersion", "1.6")))
    errors = JsonStrictValidator(sv).validate_str(json.dumps(doc), all_errors=True)
    if errors:
        msgs = [str(getattr(e, "data", e))[:300] for e in list(errors)[:5]]
        raise BomValidationError("the ML-BOM does not validate against CycloneDX "
                                 f"{sv.to_version()}: " + "; ".join(msgs))


def serialize_bom(bom_dict: dict[str, Any], fmt: str = "json") -> bytes:
    """The bytes to write or push. Only ``json``: ``xml`` raises :class:`UsageError` (see
    docs/bom-and-safety.md)."""
    if fmt == "json":
        return (json.dumps(bom_dict, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    if fmt == "xml":
        raise UsageError(
            "CycloneDX XML is not offered: cyclonedx-python-lib's XML writer does not model "
            "modelCard, data or formulation, so an XML ML-BOM would silently lose them",
            hint="use --format json (the format the attestation and referrer carry)")
    raise UsageError(f"unknown BOM format {fmt!r}; choose json or xml")


# --------------------------------------------------------------------------------------------
# summary


def summarize_bom(bom: dict[str, Any]) -> dict[str, Any]:
    """What a person wants from an ML-BOM: model, datasets, metrics, libraries and licenses,
    considerations, safety, pipeline steps."""
    comp = (bom.get("metadata") or {}).get("component") or {}
    card = comp.get("modelCard") or {}
    comps = bom.get("components") or []

    def lic(c: dict[str, Any]) -> list[str]:
        out = []
        for entry in c.get("licenses") or []:
            if "expression" in entry:
                out.append(str(entry["expression"]))
            else:
                lo = entry.get("license") or {}
                out.append(str(lo.get("id") or lo.get("name") or "unknown"))
        return out

    def props(c: dict[str, Any], name: str) -> list[str]:
        return [str(p.get("value")) for p in c.get("properties") or []
                if p.get("name") == _P + name]

    datasets = [{
        "name": c.get("name"),
        "sha256": next((h["content"] for h in c.get("hashes") or []
                        if h.get("alg") == "SHA-256"), None),
        "license": ", ".join(lic(c)) or None,
        "source": ((c.get("data") or [{}])[0].get("contents") or {}).get("url"),
    } for c in comps if c.get("type") == "data"]
    libs = [c for c in comps if c.get("type") == "library"]
    licenses = Counter(", ".join(lic(c)) or "unknown" for c in libs)
    files = comp.get("components") or []
    unsafe = [f.get("name") for f in files if props(f, "safety:verdict") == ["unsafe"]]
    steps = [t.get("name") for f in bom.get("formulation") or []
             for w in f.get("workflows") or [] for t in w.get("tasks") or []]
    params = card.get("modelParameters") or {}
    return {
        "model": {"name": comp.get("name"), "version": comp.get("version"),
                  "purl": comp.get("purl"), "files": len(files),
                  "license": ", ".join(lic(comp)) or None},
        "task": params.get("task"),
        "architecture": params.get("modelArchitecture") or params.get("architectureFamily"),
        "datasets": datasets,
        "metrics": list((card.get("quantitativeAnalysis") or {}).get("performanceMetrics") or []),
        "libraries": {"count": len(libs), "licenses": dict(licenses.most_common())},
        "considerations": card.get("considerations") or {},
        "safety": {"result": next(iter(props(comp, "safety:result")), None),
                   "scanner": next(iter(props(comp, "safety:scanner")), None),
                   "unsafe_files": unsafe},
        "steps": steps,
        "spec_version": bom.get("specVersion"),
    }
