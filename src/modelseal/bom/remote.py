"""The ML-BOM of a pushed model: its files come from the manifest (no weights downloaded), its
pipeline steps and safety result from the attestations attached to it; then sign it, attach it
(as a signed attestation and as a plain CycloneDX referrer) and find it again.

Nothing here verifies a signature: the steps and the safety result read from attached
attestations are what they claim to be. ``modelseal verify`` is what checks them against a
layout's keys; the BOM only points at them (by referrer digest and predicate type).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from modelseal._util.json import loads as load_json
from modelseal.attest.payload import ResourceDescriptor, Statement
from modelseal.attest.predicates import LinkPredicate, ModelSafety, TestResult
from modelseal.attest.statement import MATERIALS_SUBJECT
from modelseal.bom.build import build_bom, serialize_bom, task_type
from modelseal.bom.inputs import (
    AttestationRef,
    DatasetInfo,
    HashedModelFile,
    Metric,
    ModelInfo,
    StepRef,
)
from modelseal.errors import InputError
from modelseal.formats import (
    BOM_MEDIA_TYPE,
    BOM_PREDICATE,
    LINK_PREDICATE,
    TEST_RESULT_PREDICATE,
)

if TYPE_CHECKING:
    from modelseal.attest.attachments import AttestationInfo
    from modelseal.modelpack import ModelManifest
    from modelseal.oci.referrers import Attached
    from modelseal.oci.store import Descriptor, Store
    from modelseal.refs import Ref
    from modelseal.safety import SafetyReport


# Attestations that are not links, and the kind of step they belong to (by task_type).
_PREDICATE_STEP: dict[str, tuple[str, str]] = {
    "https://slsa.dev/provenance/v1": ("build", "provenance"),
    "https://in-toto.io/attestation/test-result/v0.1": ("test", "evaluation"),
    "https://modelseal.dev/attestation/model-safety/v1": ("scan", "model-safety"),
    "https://model_signing/signature/v1.0": ("deliver", "model-signing"),
}
# Order of step kinds when the data flow does not decide: approval comes before packaging,
# as in DESIGN.md's pipeline (prepare, train, evaluate, approve, package).
_RANK = {t: i for i, t in enumerate(("build", "test", "scan", "other", "release", "deliver",
                                     "deploy"))}


# --------------------------------------------------------------------------------------------
# the model, from its manifest


def attestation_uri(ref: Ref, digest: str) -> str:
    """Where a referrer lives, as a URI: ``oci://HOST/REPO@sha256:...`` for a registry,
    ``oci:PATH@sha256:...`` (modelseal's own reference form) for an image-layout directory."""
    if ref.kind == "registry":
        return f"oci://{ref.location}/{ref.repository}@{digest}"
    return f"oci:{quote(str(Path(ref.location).resolve()), safe='/')}@{digest}"


def subject_name(ref: Ref) -> str:
    """The in-toto subject name of a model manifest: the repository without tag or digest, as
    cosign and SLSA name container images (``HOST/REPO``; ``oci:PATH`` for a layout)."""
    return ref.base


def model_info_from_manifest(ref: Ref, manifest: ModelManifest,
                             config: Mapping[str, Any] | None = None, *, name: str | None = None,
                             version: str | None = None) -> ModelInfo:
    """A :class:`ModelInfo` from a ModelPack manifest: file digests are the layer digests, and
    the purl names the manifest digest and the repository."""
    from modelseal.formats import ANN_NAME, ANN_VERSION

    desc = (config or {}).get("descriptor") or {}
    anns = manifest.annotations
    model_name = (name or desc.get("name") or anns.get(ANN_NAME)
                  or (ref.repository.rsplit("/", 1)[-1] if ref.repository
                      else Path(ref.location).name) or "model")
    model_version = version or desc.get("version") or anns.get(ANN_VERSION)
    files = [HashedModelFile(la.filepath, la.digest.partition(":")[2], la.size)
             for la in manifest.layers]
    return ModelInfo(
        name=str(model_name), version=None if model_version is None else str(model_version),
        files=files, manifest_digest=manifest.digest,
        repository=f"{ref.location}/{ref.repository}" if ref.kind == "registry" else None,
        description=desc.get("description") if isinstance(desc.get("description"), str)
        else None)


def manifest_files(manifest: ModelManifest) -> dict[str, str]:
    """filepath -> sha256 hex of every layer."""
    return {la.filepath: la.digest.partition(":")[2] for la in manifest.layers}


# --------------------------------------------------------------------------------------------
# steps, from the attestations attached to the model


@dataclass
class _Found:
    info: AttestationInfo
    statement: Statement | None


def _statement(info: AttestationInfo) -> Statement | None:
    from modelseal.attest.bundle import parse_bundle

    if info.bundle is None:
        return None
    try:
        return parse_bundle(info.bundle).parsed_statement
    except InputError:  # a malformed bundle is listed, not trusted; verify names the problem
        return None




def _digests(rds: Sequence[ResourceDescriptor] | None) -> set[str]:
    return {rd.sha256 for rd in rds or [] if rd.sha256}


def _order_links(links: list[tuple[str, list[_Found]]]) -> list[tuple[str, list[_Found]]]:
    """Pipeline order of the steps (each with every link attached for it): a step comes after
    the steps whose products it uses as materials.

    A step's products are what it wrote (products that are not also its materials), so a
    pass-through step such as ``package`` does not seem to feed the steps that read the model.
    Ties: kind of step (build, test, scan, release, deliver...), then time, then name.
    """
    prods, mats = [], []
    for _, group in links:
        m_all: set[str] = set()
        p_all: set[str] = set()
        for f in group:
            link = f.statement.predicate_if(LinkPredicate) if f.statement else None
            m = _digests(link.materials if link else None)
            subjects = f.statement.subject if f.statement else []
            # a product-less step's subject names its materials: not something it wrote
            p_all |= _digests([s for s in subjects if s.name != MATERIALS_SUBJECT]) - m
            m_all |= m
        mats.append(m_all)
        prods.append(p_all)
    n = len(links)
    after = {i: {j for j in range(n) if j != i and prods[j] & mats[i]} for i in range(n)}

    def key(i: int) -> tuple[int, str, str]:
        name, group = links[i]
        return (_RANK.get(task_type(name), _RANK["other"]),
                min(f.info.created or "" for f in group), name)

    done: list[int] = []
    left = set(range(n))
    while left:
        ready = [i for i in left if not (after[i] & left)] or list(left)  # a cycle: by key
        nxt = min(ready, key=key)
        done.append(nxt)
        left.discard(nxt)
    return [links[i] for i in done]


def steps_from_attestations(ref: Ref, found: Sequence[AttestationInfo]) -> list[StepRef]:
    """Pipeline steps for the BOM's ``formulation`` from attestations attached to a model.

    Link attestations name the steps, each step once (the newest of several links of one step
    names it, the others are referenced beside it); provenance, test results, model-signing
    signatures and safety scans join the step of their kind (provenance goes with ``train``),
    or become a step of their own. ML-BOM attestations are left out (a BOM does not list
    earlier BOMs).
    """
    by_step: dict[str, list[_Found]] = {}  # several links of one step are one step
    others: list[_Found] = []
    for info in found:
        if info.predicate_type == BOM_PREDICATE:
            continue
        f = _Found(info, _statement(info))
        link = f.statement.predicate_if(LinkPredicate) if f.statement else None
        if info.predicate_type == LINK_PREDICATE and link is not None and link.name:
            by_step.setdefault(link.name, []).append(f)
        else:
            others.append(f)
    ordered = _order_links(list(by_step.items()))

    def aref(f: _Found) -> AttestationRef:
        d = f.info.descriptor.digest
        return AttestationRef(d, attestation_uri(ref, d), f.info.predicate_type)

    extra: dict[int, list[AttestationRef]] = {}
    own: list[tuple[str, str, _Found]] = []  # (name, kind, attestation)
    for f in others:
        ptype = f.info.predicate_type or ""
        kind, label = _PREDICATE_STEP.get(ptype, ("other", ptype.rstrip("/").rsplit("/", 2)[-2]
                                                  if ptype.count("/") >= 3 else "attestation"))
        cands = [i for i, (name, _) in enumerate(ordered) if task_type(name) == kind]
        if kind == "build":
            cands = [i for i in cands if "train" in ordered[i][0].lower()] or cands
        if cands:
            extra.setdefault(cands[-1], []).append(aref(f))
        else:
            own.append((label, kind, f))

    steps: list[tuple[int, StepRef]] = []
    for i, (name, group) in enumerate(ordered):
        # the newest link names the step; the earlier ones stay referenced beside it
        newest, *earlier = sorted(group, key=lambda f: (f.info.created or "",
                                                       f.info.descriptor.digest), reverse=True)
        a = aref(newest)
        steps.append((_RANK.get(task_type(name), _RANK["other"]),
                      StepRef(name, a.digest, a.ref, a.predicate_type,
                              (*map(aref, earlier), *extra.get(i, ())))))
    for label, kind, f in sorted(own, key=lambda x: (x[0], x[2].info.created or "")):
        a = aref(f)
        rank = _RANK.get(kind, _RANK["other"])
        pos = next((k for k, (r, _) in enumerate(steps) if r > rank), len(steps))
        steps.insert(pos, (rank, StepRef(label, a.digest, a.ref, a.predicate_type)))
    return [s for _, s in steps]


# --------------------------------------------------------------------------------------------
# safety: a local copy scanned, or the attached safety attestation


def scan_local_copy(scan_dir: Path, manifest: ModelManifest) -> SafetyReport:
    """Scan a local copy of a pushed model; refuse it unless its files are exactly the
    manifest's (same paths, same digests)."""
    from modelseal.safety import scan_model

    report = scan_model(scan_dir)
    have = {f.path: f.sha256 for f in report.files}
    want = manifest_files(manifest)
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    changed = sorted(p for p in set(want) & set(have) if want[p] != have[p])
    if missing or extra or changed:
        parts = [f"{label}: {', '.join(names[:5])}" + (" ..." if len(names) > 5 else "")
                 for label, names in (("differ", changed), ("missing", missing),
                                      ("not in the model", extra)) if names]
        raise InputError(f"{scan_dir} is not a copy of model {manifest.digest}: "
                         + "; ".join(parts),
                         hint="scan the directory that was pushed, or `modelseal pull` it")
    return report


def safety_from_attestations(found: Sequence[AttestationInfo],
                             manifest: ModelManifest) -> tuple[SafetyReport, str] | None:
    """The newest attached model-safety result that covers every file of the model (same
    paths and digests), and the referrer digest it came from. Its signature is not checked
    here: ``modelseal verify`` does that."""
    from modelseal.formats import SAFETY_PREDICATE
    from modelseal.safety import report_from_predicate

    want = manifest_files(manifest)
    for info in sorted(found, key=lambda i: (i.created or "", i.descriptor.digest),
                       reverse=True):
        if info.predicate_type != SAFETY_PREDICATE:
            continue
        st = _statement(info)
        if st is None or st.predicate_if(ModelSafety) is None:
            continue
        try:
            report = report_from_predicate(st.predicate or {})
        except InputError:
            continue
        have = {f.path: f.sha256 for f in report.files}
        if all(have.get(p) == d for p, d in want.items()):
            return report, info.descriptor.digest
    return None


def metrics_from_attestations(found: Sequence[AttestationInfo]) -> tuple[list[Metric], str] | None:
    """The metrics of the newest attached evaluation (test-result) attestation, and its
    referrer digest; None when there is none with numeric metrics. Not verified here."""
    from modelseal.bom.inputs import metrics_from_obj

    for info in sorted(found, key=lambda i: (i.created or "", i.descriptor.digest),
                       reverse=True):
        if info.predicate_type != TEST_RESULT_PREDICATE:
            continue
        st = _statement(info)
        result = st.predicate_if(TestResult) if st else None
        mets = result.metrics if result is not None else None
        if not mets:
            continue
        try:
            return metrics_from_obj(mets, f"evaluation attestation {info.descriptor.digest}"), \
                info.descriptor.digest
        except InputError:
            continue
    return None


# --------------------------------------------------------------------------------------------
# build, sign, attach


@dataclass
class RefBom:
    """An ML-BOM built for a pushed model, and where its parts came from."""

    document: dict[str, Any]
    ref: Ref
    manifest: ModelManifest
    steps: list[StepRef] = field(default_factory=list)
    safety: SafetyReport | None = None
    safety_source: str | None = None  # "scan of DIR" or "attestation sha256:..."
    metrics_source: str | None = None  # "given" or "attestation sha256:..."


def bom_for_ref(store: Store, ref: Ref, *, model_card: dict[str, Any] | None = None,
                datasets: list[DatasetInfo] | None = None, metrics: list[Metric] | None = None,
                environment: Path | None = None, scan_dir: Path | None = None,
                use_attached_safety: bool = True, name: str | None = None,
                version: str | None = None, spec_version: str = "1.6",
                environment_files: bool = False) -> RefBom:
    """Build (and strictly validate) the ML-BOM of the model at ``ref``: files from the manifest,
    steps from its attestations, safety from ``scan_dir`` (checked against the manifest) or
    from its model-safety attestation, metrics as given or else from its evaluation
    attestation. Reads only manifests and attestations: no weights."""
    from modelseal.attest.attachments import list_attestations
    from modelseal.transfer import fetch_model_manifest

    manifest = fetch_model_manifest(store, ref)
    pinned = ref.with_digest(manifest.digest)
    try:
        config = load_json(store.get_blob_bytes(manifest.config.digest, max_size=4 << 20),
                           what=f"config {manifest.config.digest}")
    except InputError:
        config = {}
    info = model_info_from_manifest(pinned, manifest, config if isinstance(config, dict)
                                    else None, name=name, version=version)
    found = list_attestations(store, manifest.digest, fetch=True)
    steps = steps_from_attestations(pinned, found)
    safety: SafetyReport | None = None
    source: str | None = None
    if scan_dir is not None:
        safety, source = scan_local_copy(scan_dir, manifest), f"scan of {scan_dir}"
    elif use_attached_safety:
        got = safety_from_attestations(found, manifest)
        if got is not None:
            safety, source = got[0], f"attestation {got[1]}"
    metrics_source = "given" if metrics is not None else None
    if metrics is None:
        got_m = metrics_from_attestations(found)
        if got_m is not None:
            metrics, metrics_source = got_m[0], f"attestation {got_m[1]}"
    doc = build_bom(info, model_card=model_card, datasets=datasets, metrics=metrics,
                    environment=environment, steps=steps, safety=safety,
                    spec_version=spec_version, environment_files=environment_files)
    return RefBom(doc, pinned, manifest, steps, safety, source, metrics_source)


def bom_subjects(manifest: ModelManifest, ref: Ref) -> list[tuple[str, str]]:
    """Subjects of the signed BOM: every model file (as named in the manifest) and the
    manifest itself, named after the repository."""
    files = sorted(manifest_files(manifest).items())
    return [*files, (subject_name(ref), manifest.digest.partition(":")[2])]


def bom_statement(doc: Mapping[str, Any], subjects: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The in-toto Statement (predicate :data:`BOM_PREDICATE`) carrying the BOM."""
    from modelseal.attest.statement import statement

    return statement(subjects, BOM_PREDICATE, doc)


@dataclass(frozen=True)
class BomAttachment:
    plain: Attached
    signed: Attached | None


def attach_bom(store: Store, subject: Descriptor, doc: Mapping[str, Any],
               bundle: bytes | None = None) -> BomAttachment:
    """Attach the BOM twice: the signed bundle (when given) for policy, and the plain CycloneDX
    JSON (artifactType and layer ``application/vnd.cyclonedx+json``) for SBOM tools."""
    from modelseal.attest.attachments import attach_bundle
    from modelseal.oci.referrers import attach

    signed = attach_bundle(store, subject, bundle, "signed ML-BOM") if bundle else None
    plain = attach(store, subject, artifact_type=BOM_MEDIA_TYPE, blob=serialize_bom(dict(doc)),
                   blob_media_type=BOM_MEDIA_TYPE)
    return BomAttachment(plain, signed)


# --------------------------------------------------------------------------------------------
# find it again


@dataclass(frozen=True)
class AttachedBom:
    """An ML-BOM found attached to a model. ``source`` is ``referrer`` (the plain CycloneDX
    referrer) or ``attestation`` (the predicate of a BOM attestation, signature not checked)."""

    document: dict[str, Any]
    source: str
    referrer: str  # digest of the referrer manifest


def find_attached_bom(store: Store, digest: str) -> AttachedBom | None:
    """The newest ML-BOM attached to the model manifest ``digest``: the plain CycloneDX
    referrer, else the predicate of a BOM attestation; None when there is neither."""
    from modelseal.attest.attachments import list_attestations
    from modelseal.errors import StoreError
    from modelseal.oci.referrers import fetch_referrer_blob, list_referrers

    for d in reversed(list_referrers(store, digest, BOM_MEDIA_TYPE)):
        blob, _ = fetch_referrer_blob(store, d, digest)
        try:
            doc = load_json(blob, what=f"the BOM referrer {d.digest}")
        except InputError as e:
            raise StoreError(e.message) from e
        if isinstance(doc, dict) and doc.get("bomFormat") == "CycloneDX":
            return AttachedBom(doc, "referrer", d.digest)
    for info in reversed(list_attestations(store, digest, predicate_type=BOM_PREDICATE,
                                           fetch=True)):
        st = _statement(info)
        pred = st.predicate if st is not None else None
        if pred is not None and pred.get("bomFormat") == "CycloneDX":
            return AttachedBom(pred, "attestation", info.descriptor.digest)
    return None
