"""The auditor's report: everything about one model, gathered once, rendered as JSON or HTML.

``build_report`` reads the model (manifest, config), every attestation attached to it (decoded,
not trusted: what each one *claims*), the ML-BOM, the model-safety result and, with a policy,
the verifier's verdict (which *is* trusted: it checked every signature against the layout).
The report says which is which: a step's signers come from the verdict when there is one, and
are marked "claimed" otherwise.

The provenance graph is derived from the link attestations: a material that no step produced is
an input (datasets, code), grouped by its top directory; a step consumes inputs and the
products of earlier steps; the model is what the last step produced; stages (approvals,
promotions) come from lifecycle attestations.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from modelseal._util.json import loads_object as load_json_object
from modelseal.attest.payload import ResourceDescriptor, Statement
from modelseal.attest.predicates import (
    LinkPredicate,
    ModelSafety,
    Provenance,
    TestResult,
    VerificationSummary,
)
from modelseal.errors import InputError
from modelseal.formats import (
    BOM_PREDICATE,
    LIFECYCLE_PREDICATE,
    LINK_PREDICATE,
    MODEL_SIGNING_PREDICATE,
    SAFETY_PREDICATE,
    SLSA_PROVENANCE_PREDICATE,
    TEST_RESULT_PREDICATE,
    VSA_PREDICATE,
)
from modelseal.oci.store import Store
from modelseal.refs import Ref

SHORT_PREDICATE = {
    LINK_PREDICATE: "link", SLSA_PROVENANCE_PREDICATE: "provenance",
    TEST_RESULT_PREDICATE: "test-result", SAFETY_PREDICATE: "safety",
    LIFECYCLE_PREDICATE: "lifecycle", BOM_PREDICATE: "bom", VSA_PREDICATE: "vsa",
    MODEL_SIGNING_PREDICATE: "model-signing",
}


def short_predicate(predicate_type: str | None) -> str:
    """A file-name-safe short name for a predicate type (``provenance``, ``link``, ...)."""
    if not predicate_type:
        return "unknown"
    if predicate_type in SHORT_PREDICATE:
        return SHORT_PREDICATE[predicate_type]
    tail = predicate_type.rstrip("/").split("/")
    name = tail[-2] if len(tail) > 1 and tail[-1].startswith("v") else tail[-1]
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40] or "unknown"


def decode_statement(bundle: bytes) -> Statement | None:
    """The in-toto Statement inside a Sigstore bundle (not verified); None if unreadable."""
    from modelseal.attest.dsse import Envelope

    try:
        doc = load_json_object(bundle, what="the bundle")
        envelope = Envelope.from_dict(doc.get("dsseEnvelope"))
        return Statement.from_dict(load_json_object(envelope.payload, what="the payload"))
    except InputError:
        return None




def link_name(st: Statement | None) -> str | None:
    """The step a link Statement names (claimed, not verified)."""
    link = st.predicate_if(LinkPredicate) if st else None
    return link.name or None if link is not None else None


@dataclass
class ClaimedAttestation:
    """One attestation as it claims itself to be."""

    digest: str
    predicate_type: str | None
    signer: str  # claimed (or, with a verdict, the verified signer's name)
    created: str | None
    step: str | None = None
    statement: Statement | None = field(default=None, repr=False)
    bundle: bytes | None = field(default=None, repr=False)
    counted: bool = False  # the verdict counted it towards a step

    @property
    def predicate(self) -> dict[str, Any]:
        """The predicate as JSON (empty when there is none)."""
        return (self.statement.predicate if self.statement else None) or {}

    def summary(self) -> str:
        """One line saying what it claims."""
        st = self.statement
        if st is not None:
            if (link := st.predicate_if(LinkPredicate)) is not None:
                return "ran: " + " ".join(link.command or [])
            if (prov := st.predicate_if(Provenance)) is not None:
                return f"built by {prov.run_details.builder.id}"
            if (test := st.predicate_if(TestResult)) is not None:
                return f"result: {test.result}"
            if (scan := st.predicate_if(ModelSafety)) is not None:
                return f"result: {scan.result or '?'}"
            if (vsa := st.predicate_if(VerificationSummary)) is not None:
                return f"verification: {vsa.verification_result}"
        p = self.predicate
        if self.predicate_type == LIFECYCLE_PREDICATE:
            return f"stage: {p.get('stage', '?')} ({p.get('reason', '')})".rstrip(" ()")
        return ""

    def to_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, "predicateType": self.predicate_type,
                "signer": self.signer, "created": self.created, "step": self.step,
                "counted": self.counted, "summary": self.summary(),
                "subjects": len(self.statement.subject) if self.statement else 0}


@dataclass
class StepView:
    name: str
    passed: bool | None  # None: no verdict
    signers: list[str]
    times: list[str]
    evidence: list[str]  # attestation digests
    materials: list[str] = field(default_factory=list)
    products: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "signers": self.signers,
                "times": self.times, "evidence": self.evidence, "materials": self.materials,
                "products": self.products, "command": self.command}


@dataclass
class AuditReport:
    """Everything the report shows (``to_dict`` is ``audit --json``)."""

    ref: str
    digest: str
    name: str
    version: str | None
    created: str | None
    annotations: dict[str, str]
    files: list[dict[str, Any]]
    evidence: list[ClaimedAttestation]
    steps: list[StepView]
    graph: dict[str, Any]
    stages: list[dict[str, Any]]
    verification: dict[str, Any] | None
    bom: dict[str, Any] | None
    safety: dict[str, Any] | None
    findings: list[dict[str, str]]
    generated: str

    @property
    def verdict(self) -> str:
        if self.verification is None:
            return "NOT VERIFIED"
        return "VERIFIED" if self.verification.get("verified") else "REFUSED"

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "digest": self.digest, "name": self.name,
                "version": self.version, "created": self.created,
                "annotations": self.annotations, "files": self.files,
                "attestations": [e.to_dict() for e in self.evidence],
                "steps": [s.to_dict() for s in self.steps], "graph": self.graph,
                "stages": self.stages, "verdict": self.verdict,
                "verification": self.verification, "bom": self.bom, "safety": self.safety,
                "findings": self.findings, "generated": self.generated}


def _names(rds: Sequence[ResourceDescriptor] | None) -> list[str]:
    return [rd.label for rd in rds or [] if rd.label is not None]


def _link_view(st: Statement | None) -> tuple[list[str], list[str], list[str]]:
    """(materials, products, command) a link Statement names."""
    link = st.predicate_if(LinkPredicate) if st else None
    if st is None or link is None:
        return [], [], []
    return _names(link.materials), _names(st.subject), list(link.command or [])


def _top(name: str) -> str:
    head, sep, _ = name.partition("/")
    return head + "/" if sep else name


def _graph(steps: list[StepView], model_label: str,
           stages: list[dict[str, Any]]) -> dict[str, Any]:
    """Nodes (id, label, kind: input|step|model|stage) and edges (from, to)."""
    produced: dict[str, str] = {}
    for s in steps:
        for p in s.products:
            produced.setdefault(p, s.name)
    nodes: list[dict[str, str]] = []
    edges: list[tuple[str, str]] = []
    inputs: dict[str, set[str]] = {}
    for s in steps:
        for m in s.materials:
            if m in produced and produced[m] != s.name:
                edge = (f"step:{produced[m]}", f"step:{s.name}")
                if edge not in edges:
                    edges.append(edge)
            elif m not in produced:
                inputs.setdefault(_top(m), set()).add(s.name)
    for label in sorted(inputs):
        kind = "code" if any(x in label.lower() for x in ("code", "src", ".py")) else "data"
        nodes.append({"id": f"input:{label}", "label": label, "kind": "input", "role": kind})
        for consumer in sorted(inputs[label]):
            edges.append((f"input:{label}", f"step:{consumer}"))
    for s in steps:
        nodes.append({"id": f"step:{s.name}", "label": s.name, "kind": "step",
                      "status": "passed" if s.passed else
                      ("failed" if s.passed is False else "claimed")})
    nodes.append({"id": "model", "label": model_label, "kind": "model"})
    if steps:
        # The model is what the last step produced (the package step, in a standard layout).
        edges.append((f"step:{steps[-1].name}", "model"))
    prev = "model"
    for i, st in enumerate(stages):
        nid = f"stage:{i}"
        nodes.append({"id": nid, "label": str(st.get("stage")), "kind": "stage"})
        edges.append((prev, nid))
        prev = nid
    return {"nodes": nodes, "edges": [list(e) for e in edges]}


def build_report(store: Store, ref: Ref, *, policy: Any = None,
                 registry_options: Mapping[str, Any] | None = None,
                 now: datetime | None = None) -> AuditReport:
    """Gather the report for the model at ``ref`` (``policy``: a loaded Policy, or None)."""
    from modelseal._util.time import created_time, rfc3339
    from modelseal.attest.attachments import list_attestations
    from modelseal.formats import ROLE_BY_MEDIA_TYPE
    from modelseal.transfer import fetch_model_manifest

    manifest = fetch_model_manifest(store, ref)
    digest = manifest.digest
    try:
        config = json.loads(store.get_blob_bytes(manifest.config.digest, max_size=4 << 20))
    except ValueError:
        config = {}
    desc = config.get("descriptor") if isinstance(config, dict) else None
    desc = desc if isinstance(desc, dict) else {}
    anns = dict(manifest.annotations)
    name = str(desc.get("name") or anns.get("org.opencontainers.image.title") or ref.base)
    version = desc.get("version") or anns.get("org.opencontainers.image.version")
    files = [{"path": la.filepath, "size": la.size, "digest": la.digest,
              "role": ROLE_BY_MEDIA_TYPE.get(la.media_type, la.media_type)}
             for la in manifest.layers]

    infos = list_attestations(store, digest, fetch=True)
    evidence = []
    for info in infos:
        st = decode_statement(info.bundle) if info.bundle else None
        step = link_name(st) if info.predicate_type == LINK_PREDICATE else None
        signer = info.signer or "?"
        if len(signer) == 64 and all(c in "0123456789abcdef" for c in signer):
            signer = f"key {signer[:16]}"
        evidence.append(ClaimedAttestation(info.descriptor.digest, info.predicate_type, signer,
                                 info.created, step, st, info.bundle))

    verification = None
    findings: list[dict[str, str]] = []
    result = None
    if policy is not None:
        from modelseal.verify.pipeline import verify_model

        result = verify_model(store, ref.with_digest(digest), policy,
                              registry_options=registry_options, now=now)
        verification = result.to_dict()
        by_digest = {e.digest: e for e in evidence}
        for s in result.steps:
            for att in s.attestations:
                if att in by_digest:
                    by_digest[att].step = s.name  # the verifier's assignment wins
                    by_digest[att].counted = True
        for r in result.refusals:
            findings.append({"severity": "refusal", "message": r.message,
                             "where": ", ".join(f"{k}={v}" for k, v in r.to_dict().items()
                                                if k != "message")})
        for w in result.warnings:
            findings.append({"severity": "warning", "message": w, "where": ""})
        for ig in result.ignored:
            findings.append({"severity": "ignored", "message": ig.reason,
                             "where": f"attestation={ig.attestation}"})
    else:
        findings.append({"severity": "note", "message": "no policy given: signers are as "
                         "claimed by each bundle, nothing was verified", "where": ""})

    # An attestation of another predicate belongs, as claimed, to the step whose link the same
    # key signed, when that is one step (the trainer's provenance goes with its train link).
    link_steps: dict[str, set[str]] = {}
    for e in evidence:
        if e.predicate_type == LINK_PREDICATE and e.step:
            link_steps.setdefault(e.signer, set()).add(e.step)
    for e in evidence:
        if e.step is None and len(link_steps.get(e.signer, set())) == 1:
            e.step = next(iter(link_steps[e.signer]))

    steps: list[StepView] = []
    if result is not None and result.steps:
        for s in result.steps:
            ev = [e for e in evidence if e.step == s.name]
            links = [e for e in ev if e.predicate_type == LINK_PREDICATE]
            steps.append(StepView(
                s.name, s.passed, list(s.signers),
                sorted({e.created for e in ev if e.created}), [e.digest for e in ev],
                *_link_view(links[0].statement if links else None)))
    else:
        for e in evidence:
            if e.predicate_type != LINK_PREDICATE or not e.step:
                continue
            steps.append(StepView(e.step, None, [e.signer + " (claimed)"],
                                  [e.created] if e.created else [], [e.digest],
                                  *_link_view(e.statement)))

    stages = [{"stage": e.predicate.get("stage"), "reason": e.predicate.get("reason"),
               "signer": e.signer, "created": e.created, "attestation": e.digest}
              for e in evidence
              if e.predicate_type == LIFECYCLE_PREDICATE and e.predicate.get("stage")]

    bom = None
    try:
        from modelseal.bom.build import summarize_bom
        from modelseal.bom.remote import find_attached_bom

        found = find_attached_bom(store, digest)
        if found is not None:
            bom = summarize_bom(found.document)
    except Exception as err:  # a broken BOM is a finding, not a crash of the report
        findings.append({"severity": "warning", "message": f"the ML-BOM cannot be read: {err}",
                         "where": ""})
    if bom is None:
        findings.append({"severity": "note", "message": "no ML-BOM is attached", "where": ""})

    safety = None
    for e in evidence:
        scan = e.statement.predicate_if(ModelSafety) if e.statement else None
        if scan is not None:
            safety = {"result": scan.result, "summary": scan.summary or {},
                      "scanner": (scan.scanner or {}).get("name"),
                      "scannedAt": scan.scanned_at, "attestation": e.digest,
                      "flagged": [{"path": f.path, "verdict": f.verdict} for f in scan.files
                                  if f.verdict in ("unsafe", "suspicious")]}
            if scan.result != "PASSED":
                findings.append({"severity": "warning", "message": "the model-safety scan "
                                 f"says {scan.result}", "where": f"attestation={e.digest}"})
    if safety is None and bom and (bom.get("safety") or {}).get("result"):
        safety = {"result": bom["safety"]["result"], "scanner": bom["safety"].get("scanner"),
                  "flagged": [{"path": f, "verdict": "unsafe"}
                              for f in bom["safety"].get("unsafe_files") or []],
                  "source": "ML-BOM"}

    graph = _graph(steps, f"{name}" + (f" {version}" if version else ""), stages)
    return AuditReport(str(ref.with_digest(digest)), digest, name,
                       str(version) if version else None,
                       anns.get("org.opencontainers.image.created"), anns, files, evidence,
                       steps, graph, stages, verification, bom, safety, findings,
                       rfc3339(now or created_time()))
