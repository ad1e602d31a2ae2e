"""in-toto Statements: the typed :class:`Statement` and :class:`ResourceDescriptor`, and the
builders of the Statements an ML pipeline signs.

``Statement.from_dict`` checks a Statement once (InputError naming what is wrong) and keeps
fields it does not know, so ``to_dict`` gives back the same JSON; the predicates it carries
are read by the classes of :mod:`modelseal.attest.predicates` (``Statement.predicate_as``).
The builders return JSON-ready dicts, made through those classes:

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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self, TypeVar

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


# ---------------------------------------------------------------------------------------------
# reading JSON fields once: every payload class below validates with these, so a consumer
# holding an object never re-checks a type


def as_object(value: Any, what: str) -> dict[str, Any]:
    """A copy of ``value`` as a dict, or InputError naming ``what`` is not a JSON object."""
    if type(value) is not dict and not isinstance(value, Mapping):
        raise InputError(f"{what} must be a JSON object, not {type(value).__name__}")
    return dict(value)


def pop_str(d: dict[str, Any], key: str, what: str, *, required: bool = False) -> str | None:
    """``d.pop(key)`` as a string (None when absent and not ``required``)."""
    if key not in d:
        if required:
            raise InputError(f"{what}: {key} is missing")
        return None
    v = d.pop(key)
    if not isinstance(v, str):
        raise InputError(f"{what}: {key} must be a string, not {type(v).__name__}")
    return v


def pop_object(d: dict[str, Any], key: str, what: str) -> dict[str, Any] | None:
    """``d.pop(key)`` as a JSON object, or None when absent."""
    return as_object(d.pop(key), f"{what}: {key}") if key in d else None


def pop_list(d: dict[str, Any], key: str, what: str) -> list[Any] | None:
    """``d.pop(key)`` as a JSON array, or None when absent."""
    if key not in d:
        return None
    v = d.pop(key)
    if not isinstance(v, list):
        raise InputError(f"{what}: {key} must be a list, not {type(v).__name__}")
    return list(v)


def pop_str_list(d: dict[str, Any], key: str, what: str) -> list[str] | None:
    """``d.pop(key)`` as a list of strings, or None when absent."""
    items = pop_list(d, key, what)
    if items is not None and not all(isinstance(i, str) for i in items):
        raise InputError(f"{what}: {key} must be a list of strings")
    return items


def put(d: dict[str, Any], key: str, value: Any) -> None:
    """Set ``d[key]`` unless ``value`` is None (an absent optional field stays absent)."""
    if value is not None:
        d[key] = value


_ABSENT: Any = object()
_RD_FIELDS = frozenset(("name", "uri", "digest", "annotations"))


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 5x, and there are 100,000s
class ResourceDescriptor:
    """An in-toto ResourceDescriptor: a named (or located) thing and its digests.

    Fields modelseal does not know (``content``, ``mediaType``, ...) are kept in
    ``unrecognized`` and written back, so a round trip changes no byte of a signed payload.
    """

    name: str | None = None
    digest: dict[str, str] | None = None
    uri: str | None = None
    annotations: dict[str, Any] | None = None
    unrecognized: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, name: str, sha256: str, **extra: Any) -> ResourceDescriptor:
        """A descriptor named ``name`` with a sha256 digest (hex or ``sha256:hex``)."""
        annotations = extra.pop("annotations", None)
        uri = extra.pop("uri", None)
        return cls(name=name, digest={"sha256": _hex(sha256, name)}, uri=uri,
                   annotations=dict(annotations) if annotations is not None else None,
                   unrecognized={k: v for k, v in extra.items() if v is not None})

    @property
    def sha256(self) -> str | None:
        """The sha256 hex digest, when there is one."""
        return (self.digest or {}).get("sha256")

    @property
    def label(self) -> str | None:
        """What to call it: its name, else its URI."""
        return self.name or self.uri

    @staticmethod
    def is_plain(data: Any) -> bool:
        """Whether ``data`` is a descriptor as JSON parsers give it: a dict whose known fields,
        when present, have the right types. Cheap, without building anything: a model's BOM
        or link names 100,000 files, and every subject is checked here."""
        if type(data) is not dict:
            return False
        name = data.get("name", _ABSENT)
        uri = data.get("uri", _ABSENT)
        digest = data.get("digest", _ABSENT)
        annotations = data.get("annotations", _ABSENT)
        return ((name is _ABSENT or type(name) is str)
                and (uri is _ABSENT or type(uri) is str)
                and (digest is _ABSENT or (type(digest) is dict and not [
                    v for v in digest.values() if type(v) is not str]))
                and (annotations is _ABSENT or type(annotations) is dict))

    @classmethod
    def from_dict(cls, data: Any, what: str = "resource descriptor") -> ResourceDescriptor:
        """Read one descriptor; InputError names the field that is wrong."""
        if cls.is_plain(data):
            # the common case (see is_plain) without a call per field
            name = data.get("name")
            uri = data.get("uri")
            digest = data.get("digest")
            annotations = data.get("annotations")
            known = ((name is not None) + (uri is not None) + (digest is not None)
                     + (annotations is not None))
            extra = ({k: v for k, v in data.items() if k not in _RD_FIELDS}
                     if len(data) > known else {})
            return cls(name, None if digest is None else dict(digest), uri,
                       None if annotations is None else dict(annotations), extra)
        d = as_object(data, what)
        name = pop_str(d, "name", what)
        uri = pop_str(d, "uri", what)
        digest = pop_object(d, "digest", what)
        if digest is not None and not all(isinstance(v, str) for v in digest.values()):
            raise InputError(f"{what}: every digest value must be a string")
        annotations = pop_object(d, "annotations", what)
        return cls(name, digest, uri, annotations, d)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, unrecognized fields included."""
        d: dict[str, Any] = {}
        put(d, "name", self.name)
        put(d, "uri", self.uri)
        put(d, "digest", None if self.digest is None else dict(self.digest))
        put(d, "annotations", None if self.annotations is None else dict(self.annotations))
        d.update(self.unrecognized)
        return d


def descriptors(items: list[Any] | None, what: str) -> list[ResourceDescriptor] | None:
    """A JSON list of ResourceDescriptors, each read by :meth:`ResourceDescriptor.from_dict`."""
    if items is None:
        return None
    return [ResourceDescriptor.from_dict(rd, f"{what}[{i}]") for i, rd in enumerate(items)]


def descriptors_to_list(rds: Sequence[ResourceDescriptor] | None) -> list[dict[str, Any]] | None:
    """The JSON list of ``rds`` (None stays None: the field stays absent)."""
    return None if rds is None else [rd.to_dict() for rd in rds]


@dataclass(frozen=True, slots=True)
class Statement:
    """An in-toto Statement (v1, or v0.1 as read): subjects, a predicate type and a predicate.

    The predicate stays a JSON object here: any predicate type can be carried, and the typed
    classes of :mod:`modelseal.attest.predicates` read the ones modelseal understands
    (:meth:`predicate_as`). Every subject has a digest (in-toto's rule for subjects).
    """

    subject: list[ResourceDescriptor]
    predicate_type: str
    predicate: dict[str, Any] | None = None
    statement_type: str = STATEMENT_TYPE
    unrecognized: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any) -> Statement:
        """Read a Statement; InputError says what is wrong. Unknown fields are kept."""
        if not isinstance(data, Mapping):
            raise InputError("a Statement must be a JSON object")
        d = dict(data)
        st_type = d.pop("_type", None)
        if st_type not in STATEMENT_TYPES:
            raise InputError(f"_type is {st_type!r}, not {STATEMENT_TYPE}")
        raw_subjects = d.pop("subject", None)
        if not isinstance(raw_subjects, list):
            raise InputError("a Statement's subject must be a list")
        subjects = [ResourceDescriptor.from_dict(s, "a Statement's subject")
                    for s in raw_subjects]
        if any(s.digest is None for s in subjects):
            raise InputError("each subject needs a digest")
        ptype = d.pop("predicateType", None)
        if not isinstance(ptype, str) or not ptype:
            raise InputError("a Statement needs a predicateType")
        predicate = None
        if "predicate" in d:
            predicate = d.pop("predicate")
            if not isinstance(predicate, Mapping):
                raise InputError("a Statement's predicate must be a JSON object")
            predicate = dict(predicate)
        return cls(subjects, ptype, predicate, st_type, d)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, unrecognized fields included (what :func:`canonical_json` signs)."""
        d: dict[str, Any] = {"_type": self.statement_type,
                             "subject": [s.to_dict() for s in self.subject],
                             "predicateType": self.predicate_type}
        put(d, "predicate", None if self.predicate is None else dict(self.predicate))
        d.update(self.unrecognized)
        return d

    @property
    def subjects(self) -> list[Subject]:
        """(name, sha256 hex) of each subject that has a sha256 digest (name ``""`` if none)."""
        return [(s.name or "", s.sha256) for s in self.subject if s.sha256]

    def predicate_as(self, cls: type[P]) -> P:
        """The predicate read as ``cls`` (a class of :mod:`modelseal.attest.predicates`).

        InputError when this Statement has another predicate type or a malformed predicate.
        """
        if self.predicate_type not in cls.PREDICATE_TYPES:
            raise InputError(f"not a {cls.__name__} Statement: predicateType "
                             f"{self.predicate_type!r}")
        return cls.from_dict(self.predicate or {})


class PredicateClass(Protocol):
    """What a typed predicate offers: its predicate types and a symmetric dict mapping."""

    PREDICATE_TYPES: ClassVar[tuple[str, ...]]

    @classmethod
    def from_dict(cls, data: Any) -> Self: ...

    def to_dict(self) -> dict[str, Any]: ...


P = TypeVar("P", bound=PredicateClass)


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


def check_statement(st: Any) -> None:
    """Raise InputError unless :meth:`Statement.from_dict` would read ``st``: the same rules,
    without building the objects (bundles are checked before anything reads them)."""
    if not isinstance(st, Mapping):
        raise InputError("a Statement must be a JSON object")
    subjects = st.get("subject")
    if not isinstance(subjects, list) or len(subjects) < 64:
        Statement.from_dict(st)
        return
    for s in subjects:
        if not (ResourceDescriptor.is_plain(s) and "digest" in s):
            Statement.from_dict({**st, "subject": [s]})  # raises, naming what is wrong
    Statement.from_dict({**st, "subject": []})


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
    from modelseal.attest.predicates import LinkPredicate

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

    from modelseal.oci.store import canonical_json

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

    from modelseal.attest.predicates import LinkPredicate

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
    return Link(
        name=pred.name,
        materials=materials,
        products=products,
        byproducts=dict(pred.byproducts or {}),
        command=list(pred.command or []),
        environment=dict(pred.environment or {}),
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
    from modelseal.attest.predicates import BuildDefinition, Builder, Provenance, RunDetails

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
    from modelseal.attest.predicates import TestResult

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


def now() -> datetime:
    """Current time in UTC, second precision (what the predicates record)."""
    return datetime.now(UTC).replace(microsecond=0)
