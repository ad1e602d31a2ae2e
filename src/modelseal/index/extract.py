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

from modelseal.attest.payload import ResourceDescriptor, Statement
from modelseal.attest.predicates import LinkPredicate, Provenance, TestResult
from modelseal.digest import DIR_DIGEST_SCHEME
from modelseal.errors import InputError
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


def _statement(statement: Mapping[str, Any] | Statement) -> Statement | None:
    if isinstance(statement, Statement):
        return statement
    try:
        return Statement.from_dict(statement)
    except InputError:
        return None


def _rd_digest(rd: ResourceDescriptor) -> tuple[str | None, str | None]:
    d = rd.digest or {}
    sha = _text(d.get("sha256"))
    if sha:
        ann = rd.annotations or {}
        scheme = SCHEME_FILE
        if _text(ann.get("hashScheme")):
            scheme = str(ann["hashScheme"])
        elif ann.get("digestOf") is not None:
            scheme = SCHEME_LISTING
        return f"sha256:{sha.lower()}", scheme
    commit = _text(d.get("gitCommit"))
    if commit:
        return f"gitCommit:{commit.lower()}", "gitCommit"
    for alg, val in sorted(d.items()):
        return f"{alg}:{val.lower()}", alg
    return None, None


def _kind(rd: ResourceDescriptor) -> str | None:
    return _text((rd.annotations or {}).get("kind"))


def _descriptor(rd: ResourceDescriptor, kind: str, role: str) -> Dependency | None:
    digest, scheme = _rd_digest(rd)
    name, uri = rd.name or None, rd.uri or None
    if digest is None and name is None and uri is None:
        return None
    return Dependency(kind, role, digest, scheme, name, uri)


def _provenance(pred: Provenance) -> list[Dependency]:
    out = []
    for rd in pred.build_definition.resolved_dependencies or []:
        kind = _kind(rd)
        if kind is None:
            is_code = rd.name == "code" or "gitCommit" in (rd.digest or {})
            kind = "code" if is_code else "other"
        if kind not in ("dataset", "base-model", "code"):
            kind = "other"
        d = _descriptor(rd, kind, "train")
        if d is not None:
            out.append(d)
    return out


def _evaluation(pred: TestResult) -> list[Dependency]:
    # modelseal writes the metrics file first, then the datasets (attest evaluation --dataset)
    out = []
    for i, rd in enumerate(pred.configuration or []):
        kind = _kind(rd)
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


def dependencies(statement: Mapping[str, Any] | Statement) -> list[Dependency]:
    """Datasets, code and base models a Statement names, sorted (one order for every engine).
    A malformed Statement or predicate names none."""
    st = _statement(statement)
    if st is None or st.predicate is None:
        return []
    try:
        if st.predicate_type == SLSA_PROVENANCE_PREDICATE:
            found = _provenance(st.predicate_as(Provenance))
        elif st.predicate_type == TEST_RESULT_PREDICATE:
            found = _evaluation(st.predicate_as(TestResult))
        elif st.predicate_type == BOM_PREDICATE:
            found = _bom(st.predicate)
        else:
            return []
    except InputError:
        return []
    return sorted(set(found), key=lambda d: tuple(x or "" for x in (
        d.kind, d.role, d.digest, d.scheme, d.name, d.uri)))


def link_step(statement: Mapping[str, Any] | Statement) -> str | None:
    """The step a link predicate names."""
    st = _statement(statement)
    if st is None or st.predicate_type != LINK_PREDICATE:
        return None
    try:
        return st.predicate_as(LinkPredicate).name or None
    except InputError:
        return None


def subject_hexes(statement: Mapping[str, Any] | Statement) -> set[str]:
    """The sha256 hex digests of a Statement's subjects."""
    st = _statement(statement)
    return {sha.lower() for _, sha in st.subjects} if st is not None else set()
