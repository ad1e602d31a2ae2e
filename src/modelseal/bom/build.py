"""CycloneDX ML-BOM of a model: what it is made of, validated before anyone sees it.

cyclonedx-python-lib builds what it models (the model component with its files and hashes, the
datasets and the training environment's Python distributions as components, dependencies,
properties). It does not model ``modelCard``, ``data`` or ``formulation``: :func:`_add_unmodeled`
adds them to the serialized JSON, the one place that does, and the final document is then
validated with the library's strict JSON validator. An invalid BOM raises; it is never returned.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import math
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelseal.errors import InputError, ModelsealError, UsageError

if TYPE_CHECKING:
    from modelseal.safety import SafetyReport

"""predicateType of the signed ML-BOM attestation."""
"""Media type (artifactType and layer) of the plain BOM referrer."""
SPEC_VERSIONS = ("1.6", "1.7")
DIRHASH_SCHEME = "modelseal-dirhash-v1"
"""sha256 of the lines ``<sha256 hex>  <relative path>\\n`` sorted by path (``sha256sum`` form)."""

_P = "modelseal:"  # property namespace


class BomValidationError(ModelsealError):
    """The BOM modelseal built does not validate against the CycloneDX schema (a bug)."""

    exit_code = 1


# --------------------------------------------------------------------------------------------
# inputs


@dataclass(frozen=True)
class HashedModelFile:
    """A model file as the BOM lists it: its path in the model, sha256 and size (the file on
    disk, before hashing, is :class:`modelseal.modelpack.ModelFile`)."""

    path: str  # relative, '/'-separated
    sha256: str  # hex
    size: int


@dataclass
class ModelInfo:
    """The model the BOM describes. With ``manifest_digest`` (``sha256:<hex>``) and
    ``repository`` the component gets a ``pkg:oci`` purl naming the pushed artifact."""

    name: str
    version: str | None = None
    files: list[HashedModelFile] = field(default_factory=list)
    manifest_digest: str | None = None
    repository: str | None = None
    description: str | None = None

    def purl(self) -> str | None:
        """``pkg:oci/<name>@sha256%3A<hex>?repository_url=<repository>``, or None without a
        manifest digest."""
        if not self.manifest_digest:
            return None
        from urllib.parse import quote

        name = quote(self.name.rsplit("/", 1)[-1].lower(), safe="")
        purl = f"pkg:oci/{name}@{quote(self.manifest_digest, safe='')}"
        if self.repository:
            purl += f"?repository_url={quote(self.repository, safe='/:')}"
        return purl


@dataclass
class DatasetInfo:
    """A dataset used to train or evaluate the model. ``sha256`` is the file's digest, or the
    :data:`DIRHASH_SCHEME` digest of a directory."""

    name: str
    sha256: str | None = None
    path: str | None = None
    files: int | None = None
    license: str | None = None
    source: str | None = None  # URL
    description: str | None = None
    classification: str | None = None
    owners: list[str] = field(default_factory=list)
    stewards: list[str] = field(default_factory=list)
    custodians: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Metric:
    """One performance metric, optionally for a slice of the data (``lang=de``)."""

    type: str
    value: float
    slice: str | None = None
    lower: float | None = None
    upper: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type, "value": self.value}
        if self.slice is not None:
            d["slice"] = self.slice
        if self.lower is not None or self.upper is not None:
            d["confidenceInterval"] = {"lowerBound": self.lower, "upperBound": self.upper}
        return d


@dataclass(frozen=True)
class AttestationRef:
    """Where an attestation lives and what it says, for a BOM's external references."""

    digest: str | None = None  # "sha256:<hex>" of the attestation (bundle) or its manifest
    ref: str | None = None  # where it lives: an OCI reference, a URL, a file name
    predicate_type: str | None = None


@dataclass(frozen=True)
class StepRef:
    """A pipeline step and the attestation that records it (``more``: other attestations
    about the same step, e.g. the training provenance beside the train link)."""

    name: str
    digest: str | None = None  # "sha256:<hex>" of the attestation (bundle) or its manifest
    ref: str | None = None  # where it lives: an OCI reference, a URL, a file name
    predicate_type: str | None = None
    more: tuple[AttestationRef, ...] = ()

    def attestations(self) -> list[AttestationRef]:
        """Every attestation of the step that says where it lives or what its digest is."""
        main = AttestationRef(self.digest, self.ref, self.predicate_type)
        return [a for a in (main, *self.more) if a.ref or a.digest]


# --------------------------------------------------------------------------------------------
# hashing helpers


def dir_digest(entries: list[tuple[str, str]]) -> str:
    """:data:`DIRHASH_SCHEME` hex digest of ``(relative path, sha256 hex)`` pairs."""
    lines = "".join(f"{h}  {p}\n" for p, h in sorted(entries))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def _walk_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def model_info_from_dir(root: Path, name: str, version: str | None = None) -> ModelInfo:
    """Hash every file of a model directory into a :class:`ModelInfo`."""
    from modelseal.digest import hash_files
    from modelseal.modelpack import scan_model_dir

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"model directory {root} does not exist or is not a directory")
    found = scan_model_dir(root, follow_symlinks=True)  # the files `modelseal push` packages
    files = [HashedModelFile(f.relpath, d.sha256, d.size)
             for f, d in zip(found, hash_files([f.path for f in found]), strict=True)]
    return ModelInfo(name=name, version=version, files=files)


def dataset_from_path(path: Path, name: str | None = None, **meta: Any) -> DatasetInfo:
    """A :class:`DatasetInfo` for a file or directory, hashed. ``meta`` sets the other fields."""
    from modelseal.digest import hash_files

    path = Path(path)
    if not path.exists():
        raise InputError(f"dataset path {path} does not exist",
                         hint="give an existing file or directory: --dataset PATH[=name]")
    if path.is_dir():
        paths = _walk_files(path)
        digests = hash_files(paths)
        sha = dir_digest([(d.path.relative_to(path).as_posix(), d.sha256) for d in digests])
        count = len(digests)
    else:
        sha = hash_files([path])[0].sha256
        count = 1
    return DatasetInfo(name=name or path.name, sha256=sha, path=path.as_posix(), files=count,
                       **meta)


# --------------------------------------------------------------------------------------------
# model card and metrics


def _front_matter(text: str, path: Path) -> tuple[dict[str, Any], str]:
    import yaml

    if not text.startswith("---"):
        return {}, text
    m = re.match(r"^---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(\r?\n|$)", text, re.S)
    if not m:
        raise InputError(f"{path}: YAML front matter starts with '---' but never ends")
    try:
        meta = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError as e:
        raise InputError(f"{path}: front matter is not valid YAML: {e}") from e
    if not isinstance(meta, dict):
        raise InputError(f"{path}: front matter must be a mapping, not {type(meta).__name__}")
    return meta, text[m.end():]


_SECTION_KEYS = (  # first match wins: "Bias, Risks, and Limitations" is about ethics
    ("out-of-scope", "out_of_scope"),
    ("out of scope", "out_of_scope"),
    ("bias", "ethical_considerations"),
    ("ethic", "ethical_considerations"),
    ("risk", "ethical_considerations"),
    ("intended user", "users"),
    ("intended use", "use_cases"),
    ("direct use", "use_cases"),
    ("downstream use", "use_cases"),
    ("uses", "use_cases"),
    ("limitation", "limitations"),
)


def _sections(body: str) -> dict[str, list[str]]:
    """Bullets (or paragraphs) under README headings about limits, bias and intended use."""
    out: dict[str, list[str]] = {}
    key: str | None = None
    para: list[str] = []

    def flush() -> None:
        if key and para:
            txt = " ".join(para).strip()
            if txt and "more information needed" not in txt.lower():
                out.setdefault(key, []).append(txt)
        para.clear()

    for line in body.splitlines():
        h = re.match(r"^#{1,6}\s+(.*)$", line)
        if h:
            flush()
            title = h.group(1).strip().lower()
            key = next((k for word, k in _SECTION_KEYS if word in title), None)
            continue
        s = line.strip()
        b = re.match(r"^[-*+]\s+(.*)$", s)
        if b:
            flush()
            para.append(b.group(1))
            flush()
        elif not s:
            flush()
        else:
            para.append(s)
    flush()
    return out


def _str_list(v: Any, key: str, path: Path) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    if isinstance(v, list) and all(isinstance(x, str | int | float) for x in v):
        return [str(x) for x in v]
    raise InputError(f"{path}: '{key}' must be a string or a list of strings")


def _num(v: Any, key: str, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise InputError(f"{where}: metric '{key}' has a non-numeric value {v!r}",
                         hint="metric values must be numbers, e.g. \"accuracy\": 0.93")
    return float(v)


def _model_index_metrics(mi: Any, path: Path) -> list[Metric]:
    out: list[Metric] = []
    if not isinstance(mi, list):
        raise InputError(f"{path}: 'model-index' must be a list")
    for entry in mi:
        for res in (entry or {}).get("results") or []:
            ds = res.get("dataset") or {}
            slc = ds.get("name") or ds.get("type")
            if ds.get("split"):
                slc = f"{slc} ({ds['split']})" if slc else str(ds["split"])
            for m in res.get("metrics") or []:
                mtype = str(m.get("type") or m.get("name") or "metric")
                out.append(Metric(mtype, _num(m.get("value"), mtype, str(path)),
                                  None if slc is None else str(slc)))
    return out


_CARD_LIST_KEYS = ("users", "use_cases", "limitations", "tradeoffs", "out_of_scope", "tags")
_APPROACHES = ("supervised", "unsupervised", "reinforcement-learning", "semi-supervised",
               "self-supervised")


def normalize_model_card(raw: dict[str, Any], path: Path | str = "<model card>") -> dict[str, Any]:
    """Normalize a model card mapping (modelseal keys or Hugging Face front-matter keys) into
    the dict :func:`build_bom` takes. Wrong types raise :class:`InputError` naming the key."""
    p = Path(str(path))
    if not isinstance(raw, dict):
        raise InputError(f"{p}: a model card must be a mapping, not {type(raw).__name__}")
    card: dict[str, Any] = {}
    for k in ("name", "task", "architecture_family", "model_architecture", "license",
              "description", "base_model", "approach", "library"):
        alias = {"task": "pipeline_tag", "library": "library_name",
                 "model_architecture": "architecture"}.get(k)
        v = raw.get(k, raw.get(alias) if alias else None)
        if v is None:
            continue
        if isinstance(v, list) and k in ("license", "base_model") and all(
                isinstance(x, str) for x in v):
            v = " AND ".join(v) if k == "license" else ", ".join(v)
        if not isinstance(v, str):
            raise InputError(f"{p}: '{k}' must be a string, not {type(v).__name__}")
        card[k] = v
    if "approach" in card and card["approach"] not in _APPROACHES:
        raise InputError(f"{p}: 'approach' must be one of {', '.join(_APPROACHES)}")
    for k in _CARD_LIST_KEYS:
        src = {"use_cases": raw.get("use_cases", raw.get("intended_use")),
               "limitations": raw.get("limitations", raw.get("technical_limitations"))}
        v = src.get(k, raw.get(k))
        if v is not None:
            card[k] = _str_list(v, k, p)
    eth = raw.get("ethical_considerations")
    if eth is not None:
        items = eth if isinstance(eth, list) else [eth]
        out: list[dict[str, str]] = []
        for e in items:
            if isinstance(e, str):
                out.append({"name": e})
            elif isinstance(e, dict) and isinstance(e.get("name"), str):
                d = {"name": e["name"]}
                mit = e.get("mitigation", e.get("mitigationStrategy"))
                if mit is not None:
                    d["mitigation"] = str(mit)
                out.append(d)
            else:
                raise InputError(f"{p}: each 'ethical_considerations' entry must be a string or "
                                 "a mapping with 'name' (and optional 'mitigation')")
        card["ethical_considerations"] = out
    ds = raw.get("datasets")
    if ds is not None:
        dl = ds if isinstance(ds, list) else [ds]
        for d in dl:
            if not (isinstance(d, str) or (isinstance(d, dict) and isinstance(d.get("name"),
                                                                               str))):
                raise InputError(f"{p}: each 'datasets' entry must be a name or a mapping "
                                 "with 'name'")
        card["datasets"] = [d if isinstance(d, dict) else {"name": d} for d in dl]
    metrics: list[Metric] = []
    if isinstance(raw.get("metrics"), list) and all(isinstance(m, Metric)
                                                    for m in raw["metrics"]):
        metrics += raw["metrics"]  # already normalized
    elif isinstance(raw.get("metrics"), dict) or (isinstance(raw.get("metrics"), list) and any(
            not isinstance(x, str) for x in raw["metrics"])):
        metrics += metrics_from_obj(raw["metrics"], str(p))
    if raw.get("model-index") is not None:
        metrics += _model_index_metrics(raw["model-index"], p)
    if metrics:
        card["metrics"] = metrics
    return card


def load_model_card(path: Path) -> dict[str, Any]:
    """Read a model card: YAML or JSON file, or a Hugging Face README.md (its YAML front matter
    plus the Limitations / Bias / Uses sections of its text)."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise InputError(f"model card {path} does not exist") from e
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read model card {path}: {e}") from e
    if path.suffix.lower() in (".md", ".markdown"):
        meta, body = _front_matter(text, path)
        secs = _sections(body)
        raw = dict(meta)
        for k, v in secs.items():
            raw.setdefault(k, v)
        if not raw:
            raise InputError(f"{path}: no YAML front matter and no model card sections found")
        return normalize_model_card(raw, path)
    try:
        raw = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise InputError(f"model card {path} is not valid {path.suffix.lstrip('.') or 'YAML'}: "
                         f"{e}") from e
    return normalize_model_card(raw, path)


def metrics_from_obj(obj: Any, where: str = "metrics") -> list[Metric]:
    """Metrics from ``{"accuracy": 0.93, "slices": {"lang=de": {"accuracy": 0.9}}}`` or from a
    list of ``{"type"|"name", "value", "slice"?, "lower"?, "upper"?}``."""
    out: list[Metric] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "slices":
                if not isinstance(v, dict):
                    raise InputError(f"{where}: 'slices' must map slice names to metrics")
                for sl, ms in v.items():
                    if not isinstance(ms, dict):
                        raise InputError(f"{where}: slice '{sl}' must map metric names to "
                                         "numbers")
                    for mk, mv in ms.items():
                        out.append(Metric(str(mk), _num(mv, f"{sl}/{mk}", where), str(sl)))
            else:
                out.append(Metric(str(k), _num(v, str(k), where)))
        return out
    if isinstance(obj, list):
        for i, m in enumerate(obj):
            if not isinstance(m, dict):
                raise InputError(f"{where}: entry {i} must be a mapping")
            mtype = m.get("type", m.get("name"))
            if not isinstance(mtype, str):
                raise InputError(f"{where}: entry {i} has no 'type' (or 'name')")
            ci = m.get("confidenceInterval") or {}
            lo = m.get("lower", ci.get("lowerBound"))
            hi = m.get("upper", ci.get("upperBound"))
            out.append(Metric(
                mtype, _num(m.get("value"), mtype, where),
                None if m.get("slice") is None else str(m["slice"]),
                None if lo is None else _num(lo, f"{mtype}.lower", where),
                None if hi is None else _num(hi, f"{mtype}.upper", where)))
        return out
    raise InputError(f"{where}: metrics must be a mapping or a list, not {type(obj).__name__}")


def load_metrics(path: Path) -> list[Metric]:
    """Read a metrics file (JSON, or YAML by extension). Non-numeric values raise
    :class:`InputError` naming the key."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise InputError(f"metrics file {path} does not exist") from e
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read metrics file {path}: {e}") from e
    try:
        obj = yaml.safe_load(text) if path.suffix.lower() in (".yaml", ".yml") \
            else json.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise InputError(f"metrics file {path} is not valid: {e}") from e
    return metrics_from_obj(obj, str(path))


# --------------------------------------------------------------------------------------------
# Python environment


@dataclass(frozen=True)
class PyDist:
    name: str
    version: str
    license: str | None
    record_sha256: str | None
    files: tuple[tuple[str, str], ...]  # (path, sha256 hex) from RECORD


def site_packages_of(env: Path) -> list[Path]:
    """The site-packages directories of a Python environment (a prefix such as ``sys.prefix``
    or a venv, or a site-packages directory itself)."""
    env = Path(env)
    if not env.is_dir():
        raise InputError(f"environment {env} does not exist or is not a directory")

    def has_dists(d: Path) -> bool:
        return any(d.glob("*.dist-info")) or any(d.glob("*.egg-info"))

    if has_dists(env):
        return [env]
    cands = [*env.glob("lib/python3*/site-packages"), *env.glob("lib64/python3*/site-packages"),
             *env.glob("lib/python3*/dist-packages"), env / "Lib" / "site-packages"]
    found = [d for d in cands if d.is_dir() and has_dists(d)]
    if not found:
        raise InputError(
            f"{env} is not a Python environment: no site-packages with installed distributions",
            hint="give a prefix such as sys.prefix or a venv, or a site-packages directory")
    return sorted(set(found))


def _license_of(meta: Any) -> str | None:
    expr = meta.get("License-Expression")
    if expr:
        return str(expr).strip()
    lic = meta.get("License")
    if lic and "\n" not in str(lic).strip() and len(str(lic)) <= 100 and \
            str(lic).strip().upper() != "UNKNOWN":
        return str(lic).strip()
    for c in meta.get_all("Classifier") or []:
        if str(c).startswith("License ::") and str(c).split("::")[-1].strip() != "OSI Approved":
            return str(c).split("::")[-1].strip()
    return None


def python_distributions(env: Path) -> list[PyDist]:
    """Every installed distribution of ``env`` with license and RECORD file hashes."""
    import importlib.metadata as md

    seen: dict[str, PyDist] = {}
    for sp in site_packages_of(env):
        for d in md.distributions(path=[str(sp)]):
            name = d.name
            if not name or name.lower() in seen:
                continue
            files: list[tuple[str, str]] = []
            for f in d.files or []:
                if f.hash is not None and f.hash.mode == "sha256":
                    raw = base64.urlsafe_b64decode(f.hash.value + "=" * (-len(f.hash.value) % 4))
                    files.append((str(f).replace("\\", "/"), raw.hex()))
            rec = d.read_text("RECORD")
            rec_sha = hashlib.sha256(rec.encode("utf-8")).hexdigest() if rec else None
            seen[name.lower()] = PyDist(str(name), str(d.version), _license_of(d.metadata),
                                        rec_sha, tuple(sorted(files)))
    return sorted(seen.values(), key=lambda p: p.name.lower())


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


def _task_type(name: str) -> str:
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
        mhash = dir_digest([(f.path, f.sha256) for f in model.files])
        mprops.append(_prop("hash-scheme", DIRHASH_SCHEME))
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
        if d.sha256 and (d.files or 0) > 1:
            props.append(_prop("hash-scheme", DIRHASH_SCHEME))
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
                                 "name": st.name, "taskTypes": [_task_type(st.name)]}
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
