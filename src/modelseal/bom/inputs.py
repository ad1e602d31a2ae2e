"""What an ML-BOM is built from: the model's files, datasets, metrics, the model card and the
pipeline steps (their attestations), read and validated here; :mod:`modelseal.bom.build`
assembles them into a document.

A directory (a model with no manifest yet, a dataset) is hashed with the one directory digest,
:data:`modelseal.digest.DIR_DIGEST_SCHEME`, over the files the one walker keeps
(:func:`modelseal._util.fs.walk_files`): the same digest provenance records for the same
directory.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelseal.digest import DIR_DIGEST_SCHEME, hash_dir, hash_files
from modelseal.errors import InputError


@dataclass(frozen=True)
class HashedModelFile:
    """A model file as the BOM lists it: its path in the model, sha256 and size."""

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
    directory digest (``hash_scheme`` :data:`modelseal.digest.DIR_DIGEST_SCHEME`) of a
    directory."""

    name: str
    sha256: str | None = None
    path: str | None = None
    files: int | None = None
    hash_scheme: str | None = None  # None: the file's own sha256
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
# hashing


def model_info_from_dir(root: Path, name: str, version: str | None = None) -> ModelInfo:
    """Hash every file of a model directory into a :class:`ModelInfo` (the files
    `modelseal push --follow-symlinks` packages)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"model directory {root} does not exist or is not a directory")
    found = hash_dir(root)
    return ModelInfo(name=name, version=version,
                     files=[HashedModelFile(f.relpath, f.sha256, f.size) for f in found.files])


def dataset_from_path(path: Path, name: str | None = None, **meta: Any) -> DatasetInfo:
    """A :class:`DatasetInfo` for a file or directory, hashed. ``meta`` sets the other fields."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"dataset path {path} does not exist",
                         hint="give an existing file or directory: --dataset PATH[=name]")
    if path.is_dir():
        found = hash_dir(path)
        return DatasetInfo(name=name or path.name, sha256=found.sha256, path=path.as_posix(),
                           files=len(found.files), hash_scheme=DIR_DIGEST_SCHEME, **meta)
    sha = hash_files([path])[0].sha256
    return DatasetInfo(name=name or path.name, sha256=sha, path=path.as_posix(), files=1,
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

