"""The Statements an ML pipeline signs, built as JSON-ready dicts through the typed payload
classes (:mod:`modelseal.attest.payload`, :mod:`modelseal.attest.predicates`):

- link ``https://in-toto.io/attestation/link/v0.3``: one step (name, command, materials,
  byproducts, environment); subjects are the products;
- SLSA provenance ``https://slsa.dev/provenance/v1`` for training;
- test result ``https://in-toto.io/attestation/test-result/v0.1`` for evaluation, plus the
  metrics and the declared thresholds.

And back: :func:`statement_to_link` turns a link Statement into in-toto's ``Link`` for
verifylib's rules; :func:`evaluate` checks metrics against declared thresholds.
"""

from __future__ import annotations

import math
import operator
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from modelseal.attest.payload import ResourceDescriptor, Statement, Subject, sha256_hex
from modelseal.attest.predicates import (
    BuildDefinition,
    Builder,
    LinkPredicate,
    Provenance,
    RunDetails,
    TestResult,
)
from modelseal.errors import InputError, UsageError
from modelseal.formats import BUILD_TYPE, LINK_PREDICATE

if TYPE_CHECKING:
    from in_toto.models.link import Link

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def resource_descriptor(name: str, sha256: str, **extra: Any) -> dict[str, Any]:
    """An in-toto ResourceDescriptor with a name and a sha256 digest (and e.g. uri)."""
    return ResourceDescriptor.of(name, sha256, **extra).to_dict()


def statement(subjects: Iterable[Subject], predicate_type: str,
              predicate: Mapping[str, Any]) -> dict[str, Any]:
    """An in-toto Statement v1 about the given (name, sha256) subjects."""
    if not predicate_type:
        raise UsageError("a Statement needs a predicate type URI")
    return Statement([ResourceDescriptor.of(n, d) for n, d in subjects], predicate_type,
                     dict(predicate)).to_dict()


# ---------------------------------------------------------------------------------------------
# link


def link_predicate(
    name: str,
    command: Sequence[str],
    materials: Iterable[Subject],
    byproducts: Mapping[str, Any] | None = None,
    environment: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The link v0.3 predicate for one step."""
    return LinkPredicate(
        name=name,
        command=list(command),
        materials=[ResourceDescriptor.of(n, d) for n, d in materials],
        byproducts=dict(byproducts or {}),
        environment=dict(environment or {}),
    ).to_dict()


MATERIALS_SUBJECT = "modelseal:materials"
"""The subject name of a link whose step wrote no products (see :func:`materials_digest`)."""
_MATERIALS_DOMAIN = b"modelseal/materials/v1\n"


def materials_digest(materials: Iterable[Subject]) -> str:
    """sha256 hex naming a step's materials as a whole: over ``modelseal/materials/v1\n``
    followed by the canonical JSON list of ``{"name", "sha256"}``, sorted by name."""
    import hashlib

    from modelseal._util.json import canonical_json

    items = sorted((n, sha256_hex(d, n)) for n, d in materials)
    listing = canonical_json([{"name": n, "sha256": d} for n, d in items])
    return hashlib.sha256(_MATERIALS_DOMAIN + listing).hexdigest()


def link_statement(name: str, command: Sequence[str], materials: Iterable[Subject],
                   products: Iterable[Subject], byproducts: Mapping[str, Any] | None = None,
                   environment: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A Statement with the link predicate; subjects are the products.

    A step that wrote nothing (an approval) still gets one subject, because in-toto's
    libraries and Sigstore refuse a Statement without one: ``modelseal:materials`` with the
    :func:`materials_digest` of what the step read, i.e. what was approved.
    :func:`statement_to_link` recognises it by recomputing that digest and reports no products.
    """
    mats = list(materials)
    prods = list(products)
    if not prods:
        prods = [(MATERIALS_SUBJECT, materials_digest(mats))]
    return statement(prods, LINK_PREDICATE,
                     link_predicate(name, command, mats, byproducts, environment))


def _digest_map(rds: Sequence[ResourceDescriptor], what: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for rd in rds:
        if rd.digest is None:
            raise InputError(f"link {what}: each entry needs a name and a digest")
        if rd.label is None:
            raise InputError(f"link {what}: an entry has no name")
        out[rd.label] = dict(rd.digest)
    return out


def statement_to_link(st: Mapping[str, Any] | Statement) -> Link:
    """An ``in_toto.models.link.Link`` from a link-predicate Statement, for verifylib's rules."""
    from in_toto.models.link import Link

    parsed = st if isinstance(st, Statement) else Statement.from_dict(st)
    if parsed.predicate_type != LINK_PREDICATE:
        raise InputError(f"not a link Statement: predicateType {parsed.predicate_type!r}")
    pred = parsed.predicate_as(LinkPredicate)
    if not pred.name:
        raise InputError("link Statement without a step name")
    materials = _digest_map(pred.materials or [], "materials")
    products = _digest_map(parsed.subject, "subjects")
    if set(products) == {MATERIALS_SUBJECT}:
        # a step without products names its materials as its subject (link_statement);
        # only the digest recomputed from the signed materials makes it so
        shas = [(n, d.get("sha256", "")) for n, d in materials.items()]
        if all(_HEX64.match(d) for _, d in shas) and (
                products[MATERIALS_SUBJECT].get("sha256") == materials_digest(shas)):
            products = {}
    link = Link(
        name=pred.name,
        materials={},
        products={},
        byproducts=dict(pred.byproducts or {}),
        command=list(pred.command or []),
        environment=dict(pred.environment or {}),
    )
    # Link() validates through inspect.getmembers, which also computes signable_bytes: the
    # canonical JSON of every artifact (seconds for 100,000 files), only to discard it. The
    # artifacts are set afterwards and checked by the very validators Link() would run.
    link.materials, link.products = materials, products
    from securesystemslib.exceptions import FormatError

    try:
        link._validate_materials()
        link._validate_products()
    except FormatError as e:  # e.g. a digest that is not lowercase hex of its length
        raise InputError(f"link {pred.name!r}: an artifact in-toto cannot read: "
                         f"{str(e)[:200]}") from e
    return link


# ---------------------------------------------------------------------------------------------
# SLSA provenance


@dataclass(frozen=True)
class CIContext:
    """Who ran a job and which run: taken from the CI's environment when there is one."""

    builder_id: str | None = None
    invocation_id: str | None = None
    repository: str | None = None
    commit: str | None = None
    ref: str | None = None


def ci_context(env: Mapping[str, str] | None = None) -> CIContext:
    """Builder identity and run id from GitHub Actions or GitLab CI variables, if present."""
    e = os.environ if env is None else env
    if e.get("GITHUB_ACTIONS") == "true":
        server = e.get("GITHUB_SERVER_URL", "https://github.com")
        repo = e.get("GITHUB_REPOSITORY", "")
        run = e.get("GITHUB_RUN_ID", "")
        attempt = e.get("GITHUB_RUN_ATTEMPT", "1")
        workflow = e.get("GITHUB_WORKFLOW_REF")  # owner/repo/.github/workflows/x.yml@ref
        builder = f"{server}/{workflow}" if workflow else f"{server}/{repo}/actions"
        return CIContext(
            builder_id=builder,
            invocation_id=f"{server}/{repo}/actions/runs/{run}/attempts/{attempt}" if run else None,
            repository=f"{server}/{repo}" if repo else None,
            commit=e.get("GITHUB_SHA"), ref=e.get("GITHUB_REF"))
    if e.get("GITLAB_CI") == "true":
        server = e.get("CI_SERVER_URL", "https://gitlab.com")
        project = e.get("CI_PROJECT_PATH", "")
        runner = e.get("CI_RUNNER_ID")
        return CIContext(
            builder_id=f"{server}/{project}/-/runners/{runner}" if runner
            else f"{server}/{project}",
            invocation_id=e.get("CI_JOB_URL"),
            repository=e.get("CI_PROJECT_URL") or (f"{server}/{project}" if project else None),
            commit=e.get("CI_COMMIT_SHA"), ref=e.get("CI_COMMIT_REF_NAME"))
    return CIContext()


def _timestamp(t: datetime | None) -> str | None:
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def provenance_predicate(
    *,
    hyperparameters: Mapping[str, Any] | None = None,
    datasets: Iterable[Mapping[str, Any]] = (),
    base_models: Iterable[Mapping[str, Any]] = (),
    code_repository: str | None = None,
    code_commit: str | None = None,
    builder_id: str | None = None,
    invocation_id: str | None = None,
    started_on: datetime | None = None,
    finished_on: datetime | None = None,
    build_type: str = BUILD_TYPE,
    internal_parameters: Mapping[str, Any] | None = None,
    ci: CIContext | None = None,
) -> dict[str, Any]:
    """SLSA provenance v1 for a training run.

    Hyperparameters are the externalParameters; datasets and base models (ResourceDescriptors
    with digests) and the code (repository + commit) are resolvedDependencies. Builder id,
    invocation id, repository and commit default to ``ci`` (see ``ci_context``).
    """
    ci = ci or CIContext()
    repo = code_repository or ci.repository
    commit = code_commit or ci.commit
    deps: list[ResourceDescriptor] = []
    if repo or commit:
        uri = None
        if repo:
            uri = f"git+{repo}" if "://" in repo and not repo.startswith("git+") else repo
        deps.append(ResourceDescriptor(name="code", uri=uri,
                                       digest={"gitCommit": commit} if commit else None))
    for kind, items in (("dataset", datasets), ("base-model", base_models)):
        for item in items:
            rd = ResourceDescriptor.from_dict(item, kind)
            if not rd.digest:
                raise InputError(f"{kind} {rd.label!r} has no digest")
            deps.append(ResourceDescriptor(rd.name, rd.digest, rd.uri,
                                           {**(rd.annotations or {}), "kind": kind},
                                           rd.unrecognized))
    metadata: dict[str, Any] = {}
    inv = invocation_id or ci.invocation_id
    if inv:
        metadata["invocationId"] = inv
    for key, t in (("startedOn", started_on), ("finishedOn", finished_on)):
        ts = _timestamp(t)
        if ts:
            metadata[key] = ts
    return Provenance(
        BuildDefinition(build_type, {"hyperparameters": dict(hyperparameters or {})},
                        dict(internal_parameters) if internal_parameters else None, deps),
        RunDetails(Builder(builder_id or ci.builder_id or "local"), metadata or None),
    ).to_dict()


# ---------------------------------------------------------------------------------------------
# evaluation


_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
    ">": operator.gt, "<": operator.lt,
}
_THRESHOLD = re.compile(r"^\s*([A-Za-z_][\w.\-/@]*)\s*(>=|<=|==|!=|>|<)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Threshold:
    """``metric op value``, e.g. ``accuracy>=0.9``. Dotted metrics reach into nested JSON."""

    metric: str
    op: str
    value: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "op": self.op, "value": self.value}


def parse_threshold(text: str) -> Threshold:
    """Parse ``accuracy>=0.9``; UsageError when it is not of that form."""
    m = _THRESHOLD.match(text)
    if not m:
        raise UsageError(f"threshold {text!r} is not of the form METRIC>=VALUE",
                         hint="operators: >= <= > < == !=")
    try:
        value = float(m.group(3))
    except ValueError as e:
        raise UsageError(f"threshold {text!r}: {m.group(3)!r} is not a number") from e
    if math.isnan(value):
        raise UsageError(f"threshold {text!r}: NaN is not a threshold")
    return Threshold(m.group(1), m.group(2), value)


def metric_value(metrics: Mapping[str, Any], name: str) -> float | None:
    """A metric by name, or a dotted path into nested objects; None when absent or not a number."""
    cur: Any = metrics
    if name in metrics:
        cur = metrics[name]
    else:
        for part in name.split("."):
            if not isinstance(cur, Mapping) or part not in cur:
                return None
            cur = cur[part]
    if isinstance(cur, bool) or not isinstance(cur, (int, float)):
        return None
    return float(cur)


def evaluate(metrics: Mapping[str, Any],
             thresholds: Iterable[Threshold]) -> tuple[list[str], list[str]]:
    """(passed, failed) test names, one per threshold. A missing or NaN metric fails."""
    passed, failed = [], []
    for t in thresholds:
        v = metric_value(metrics, t.metric)
        if v is not None and not math.isnan(v) and _OPS[t.op](v, t.value):
            passed.append(str(t))
        else:
            failed.append(str(t) if v is not None else f"{t} (metric missing)")
    return passed, failed


def evaluation_predicate(
    metrics: Mapping[str, Any],
    thresholds: Sequence[Threshold],
    *,
    configuration: Iterable[Mapping[str, Any]] = (),
    url: str | None = None,
) -> dict[str, Any]:
    """test-result v0.1: PASSED when every threshold holds, with the metrics themselves."""
    passed, failed = evaluate(metrics, thresholds)
    return TestResult(
        result="FAILED" if failed else "PASSED",
        configuration=[ResourceDescriptor.from_dict(c, "configuration") for c in configuration],
        url=url or None,
        passed_tests=passed,
        warned_tests=[],
        failed_tests=failed,
        metrics=dict(metrics),
        thresholds=[t.to_dict() for t in thresholds],
    ).to_dict()


