"""in-toto Statement v1 and the predicates an ML pipeline signs, as plain JSON-ready dicts.

- link ``https://in-toto.io/attestation/link/v0.3``: one step (name, command, materials,
  byproducts, environment); subjects are the products;
- SLSA provenance ``https://slsa.dev/provenance/v1`` for training;
- test result ``https://in-toto.io/attestation/test-result/v0.1`` for evaluation, plus the
  metrics and the declared thresholds.
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

from modelseal.errors import InputError, UsageError
from modelseal.formats import (
    BUILD_TYPE,
    LINK_PREDICATE,
    STATEMENT_TYPE,
    STATEMENT_TYPES,
)

if TYPE_CHECKING:
    from in_toto.models.link import Link


_HEX64 = re.compile(r"^[0-9a-f]{64}$")

Subject = tuple[str, str]
"""(name, sha256 hex)."""


def _hex(digest: str, what: str) -> str:
    d = digest.removeprefix("sha256:").lower()
    if not _HEX64.match(d):
        raise InputError(f"{what}: {digest!r} is not a sha256 digest")
    return d


def resource_descriptor(name: str, sha256: str, **extra: Any) -> dict[str, Any]:
    """An in-toto ResourceDescriptor with a name and a sha256 digest (and e.g. uri)."""
    rd: dict[str, Any] = {"name": name, "digest": {"sha256": _hex(sha256, name)}}
    rd.update({k: v for k, v in extra.items() if v is not None})
    return rd


def statement(subjects: Iterable[Subject], predicate_type: str,
              predicate: Mapping[str, Any]) -> dict[str, Any]:
    """An in-toto Statement v1 about the given (name, sha256) subjects."""
    if not predicate_type:
        raise UsageError("a Statement needs a predicate type URI")
    return {
        "_type": STATEMENT_TYPE,
        "subject": [resource_descriptor(n, d) for n, d in subjects],
        "predicateType": predicate_type,
        "predicate": dict(predicate),
    }


def check_statement(st: Any) -> None:
    """Raise InputError unless ``st`` has the shape of an in-toto Statement."""
    if not isinstance(st, Mapping):
        raise InputError("a Statement must be a JSON object")
    if st.get("_type") not in STATEMENT_TYPES:
        raise InputError(f"_type is {st.get('_type')!r}, not {STATEMENT_TYPE}")
    subjects = st.get("subject")
    if not isinstance(subjects, list):
        raise InputError("a Statement's subject must be a list")
    for s in subjects:
        if not isinstance(s, Mapping) or not isinstance(s.get("digest"), Mapping):
            raise InputError("each subject needs a digest")
    if not isinstance(st.get("predicateType"), str) or not st["predicateType"]:
        raise InputError("a Statement needs a predicateType")
    if "predicate" in st and not isinstance(st["predicate"], Mapping):
        raise InputError("a Statement's predicate must be a JSON object")


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
    return {
        "name": name,
        "command": list(command),
        "materials": [resource_descriptor(n, d) for n, d in materials],
        "byproducts": dict(byproducts or {}),
        "environment": dict(environment or {}),
    }


MATERIALS_SUBJECT = "modelseal:materials"
"""The subject name of a link whose step wrote no products (see :func:`materials_digest`)."""
_MATERIALS_DOMAIN = b"modelseal/materials/v1\n"


def materials_digest(materials: Iterable[Subject]) -> str:
    """sha256 hex naming a step's materials as a whole: over ``modelseal/materials/v1\n``
    followed by the canonical JSON list of ``{"name", "sha256"}``, sorted by name."""
    import hashlib

    from modelseal._util.json import canonical_json

    items = sorted((n, _hex(d, n)) for n, d in materials)
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


def _digest_map(rds: Any, what: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    if not isinstance(rds, list):
        raise InputError(f"link {what} must be a list")
    for rd in rds:
        if not isinstance(rd, Mapping) or not isinstance(rd.get("digest"), Mapping):
            raise InputError(f"link {what}: each entry needs a name and a digest")
        name = rd.get("name") or rd.get("uri")
        if not isinstance(name, str):
            raise InputError(f"link {what}: an entry has no name")
        out[name] = {str(k): str(v) for k, v in rd["digest"].items()}
    return out


def statement_to_link(st: Mapping[str, Any]) -> Link:
    """An ``in_toto.models.link.Link`` from a link-predicate Statement, for verifylib's rules."""
    from in_toto.models.link import Link

    check_statement(st)
    if st.get("predicateType") != LINK_PREDICATE:
        raise InputError(f"not a link Statement: predicateType {st.get('predicateType')!r}")
    pred = st.get("predicate") or {}
    name = pred.get("name")
    if not isinstance(name, str) or not name:
        raise InputError("link Statement without a step name")
    command = pred.get("command") or []
    if isinstance(command, str):
        command = command.split()
    materials = _digest_map(pred.get("materials") or [], "materials")
    products = _digest_map(st.get("subject") or [], "subjects")
    if set(products) == {MATERIALS_SUBJECT}:
        # a step without products names its materials as its subject (link_statement);
        # only the digest recomputed from the signed materials makes it so
        shas = [(n, str(d.get("sha256", ""))) for n, d in materials.items()]
        if all(_HEX64.match(d) for _, d in shas) and (
                products[MATERIALS_SUBJECT].get("sha256") == materials_digest(shas)):
            products = {}
    return Link(
        name=name,
        materials=materials,
        products=products,
        byproducts=dict(pred.get("byproducts") or {}),
        command=[str(c) for c in command],
        environment=dict(pred.get("environment") or {}),
    )


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
    deps: list[dict[str, Any]] = []
    if repo or commit:
        code: dict[str, Any] = {"name": "code"}
        if repo:
            code["uri"] = f"git+{repo}" if "://" in repo and not repo.startswith("git+") else repo
        if commit:
            code["digest"] = {"gitCommit": commit}
        deps.append(code)
    for kind, items in (("dataset", datasets), ("base-model", base_models)):
        for rd in items:
            if not isinstance(rd.get("digest"), Mapping) or not rd["digest"]:
                raise InputError(f"{kind} {rd.get('name') or rd.get('uri')!r} has no digest")
            d = dict(rd)
            d.setdefault("annotations", {})
            d["annotations"] = {**d["annotations"], "kind": kind}
            deps.append(d)
    build_def: dict[str, Any] = {
        "buildType": build_type,
        "externalParameters": {"hyperparameters": dict(hyperparameters or {})},
        "resolvedDependencies": deps,
    }
    if internal_parameters:
        build_def["internalParameters"] = dict(internal_parameters)
    metadata: dict[str, Any] = {}
    inv = invocation_id or ci.invocation_id
    if inv:
        metadata["invocationId"] = inv
    for key, t in (("startedOn", started_on), ("finishedOn", finished_on)):
        ts = _timestamp(t)
        if ts:
            metadata[key] = ts
    run: dict[str, Any] = {"builder": {"id": builder_id or ci.builder_id or "local"}}
    if metadata:
        run["metadata"] = metadata
    return {"buildDefinition": build_def, "runDetails": run}


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
    pred: dict[str, Any] = {
        "result": "FAILED" if failed else "PASSED",
        "configuration": [dict(c) for c in configuration],
        "passedTests": passed,
        "warnedTests": [],
        "failedTests": failed,
        "metrics": dict(metrics),
        "thresholds": [t.to_dict() for t in thresholds],
    }
    if url:
        pred["url"] = url
    return pred


