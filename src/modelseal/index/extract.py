"""What a Statement says a model was made from (pure: no I/O, no verification).

Datasets are nodes identified by digest (``sha256:<hex>``) with names and URIs as attributes,
whichever predicate names them: SLSA provenance ``resolvedDependencies`` (training, with
``annotations.kind`` dataset / base-model, the code as ``gitCommit``), test-result
``configuration`` (evaluation), and the CycloneDX ML-BOM's ``data`` components. A directory
has one digest everywhere (``modelseal.digest.DIR_DIGEST_SCHEME``, in provenance's
``annotations.hashScheme`` and the BOM's ``modelseal:hash-scheme``), so it is one node. Each
digest is kept with its ``scheme``: attestations signed before the scheme was unified carry a
provenance directory digest over a canonical JSON listing (:data:`SCHEME_LISTING`), which joins
the others by name only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelseal.digest import DIR_DIGEST_SCHEME
from modelseal.formats import (
    BOM_PREDICATE,
    LINK_PREDICATE,
    SLSA_PROVENANCE_PREDICATE,
    TEST_RESULT_PREDICATE,
)

SCHEME_FILE = "sha256"
SCHEME_DIR = DIR_DIGEST_SCHEME
SCHEME_LISTING = "modelseal-listing-v1"
"""Read-only: how provenance hashed a directory before the directory digest was unified
(sha256 of canonical JSON ``[{name, sha256}]``, marked by ``annotations.digestOf``)."""


@dataclass(frozen=True, order=True)
class Dependency:
    """One thing a model was made from, as one attestation names it."""

    kind: str  # dataset | code | base-model | other
    role: str  # train | evaluate | bom
    digest: str | None
    scheme: str | None
    name: str | None
    uri: str | None


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _rd_digest(rd: Mapping[str, Any]) -> tuple[str | None, str | None]:
    d = rd.get("digest")
    if not isinstance(d, Mapping):
        return None, None
    sha = _text(d.get("sha256"))
    if sha:
        ann = rd.get("annotations")
        scheme = SCHEME_FILE
        if isinstance(ann, Mapping):
            if _text(ann.get("hashScheme")):
                scheme = str(ann["hashScheme"])
            elif ann.get("digestOf") is not None:
                scheme = SCHEME_LISTING
        return f"sha256:{sha.lower()}", scheme
    commit = _text(d.get("gitCommit"))
    if commit:
        return f"gitCommit:{commit.lower()}", "gitCommit"
    for alg, val in sorted(d.items()):
        if isinstance(val, str):
            return f"{alg}:{val.lower()}", str(alg)
    return None, None


def _descriptor(rd: Any, kind: str, role: str) -> Dependency | None:
    if not isinstance(rd, Mapping):
        return None
    digest, scheme = _rd_digest(rd)
    name, uri = _text(rd.get("name")), _text(rd.get("uri"))
    if digest is None and name is None and uri is None:
        return None
    return Dependency(kind, role, digest, scheme, name, uri)


def _provenance(pred: Mapping[str, Any]) -> list[Dependency]:
    bd = pred.get("buildDefinition")
    deps = bd.get("resolvedDependencies") if isinstance(bd, Mapping) else None
    out = []
    for rd in deps if isinstance(deps, list) else []:
        if not isinstance(rd, Mapping):
            continue
        ann = rd.get("annotations")
        kind = _text(ann.get("kind")) if isinstance(ann, Mapping) else None
        dg = rd.get("digest")
        if kind is None:
            is_code = rd.get("name") == "code" or (isinstance(dg, Mapping) and "gitCommit" in dg)
            kind = "code" if is_code else "other"
        if kind not in ("dataset", "base-model", "code"):
            kind = "other"
        d = _descriptor(rd, kind, "train")
        if d is not None:
            out.append(d)
    return out


def _evaluation(pred: Mapping[str, Any]) -> list[Dependency]:
    # modelseal writes the metrics file first, then the datasets (attest evaluation --dataset)
    config = pred.get("configuration")
    items = config if isinstance(config, list) else []
    out = []
    for i, rd in enumerate(items):
        ann = rd.get("annotations") if isinstance(rd, Mapping) else None
        kind = _text(ann.get("kind")) if isinstance(ann, Mapping) else None
        if kind is None:
            kind = "other" if i == 0 else "dataset"
        d = _descriptor(rd, "dataset" if kind == "dataset" else "other", "evaluate")
        if d is not None:
            out.append(d)
    return out


def _bom(pred: Mapping[str, Any]) -> list[Dependency]:
    comps = pred.get("components")
    out = []
    for c in comps if isinstance(comps, list) else []:
        if not isinstance(c, Mapping) or c.get("type") != "data":
            continue
        props = {str(p.get("name")): p.get("value") for p in c.get("properties") or []
                 if isinstance(p, Mapping)}
        digest = None
        for h in c.get("hashes") or []:
            if isinstance(h, Mapping) and h.get("alg") == "SHA-256" and _text(h.get("content")):
                digest = f"sha256:{str(h['content']).lower()}"
        uri = next((_text(r.get("url")) for r in c.get("externalReferences") or []
                    if isinstance(r, Mapping) and _text(r.get("url"))), None)
        name = _text(c.get("name"))
        if digest is None and name is None:
            continue
        # the BOM names a directory's scheme in the property modelseal:hash-scheme
        scheme = _text(props.get("modelseal:hash-scheme")) or (SCHEME_FILE if digest else None)
        out.append(Dependency("dataset", "bom", digest, scheme, name, uri))
    return out


def dependencies(statement: Mapping[str, Any]) -> list[Dependency]:
    """Datasets, code and base models a Statement names, sorted (one order for every engine)."""
    ptype = statement.get("predicateType")
    pred = statement.get("predicate")
    if not isinstance(pred, Mapping):
        return []
    if ptype == SLSA_PROVENANCE_PREDICATE:
        found = _provenance(pred)
    elif ptype == TEST_RESULT_PREDICATE:
        found = _evaluation(pred)
    elif ptype == BOM_PREDICATE:
        found = _bom(pred)
    else:
        return []
    return sorted(set(found), key=lambda d: tuple(x or "" for x in (
        d.kind, d.role, d.digest, d.scheme, d.name, d.uri)))


def link_step(statement: Mapping[str, Any]) -> str | None:
    """The step a link predicate names."""
    pred = statement.get("predicate")
    if statement.get("predicateType") == LINK_PREDICATE and isinstance(pred, Mapping):
        return _text(pred.get("name"))
    return None


def subject_hexes(statement: Mapping[str, Any]) -> set[str]:
    """The sha256 hex digests of a Statement's subjects."""
    out = set()
    for s in statement.get("subject") or []:
        d = s.get("digest") if isinstance(s, Mapping) else None
        if isinstance(d, Mapping) and isinstance(d.get("sha256"), str):
            out.add(d["sha256"].lower())
    return out
