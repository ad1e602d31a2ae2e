"""The predicates modelseal writes and reads, as typed classes.

Each class reads a predicate once (``from_dict``: every field checked, InputError naming the
one that is wrong) and writes it back (``to_dict``): fields it does not know are kept in
``unrecognized`` and re-emitted, and an absent optional field stays absent, so
``to_dict(from_dict(d)) == d`` and a re-signed payload has the same canonical bytes.

- :class:`LinkPredicate`: in-toto link v0.3, one pipeline step;
- :class:`Provenance`: SLSA provenance v1 (training);
- :class:`TestResult`: in-toto test-result v0.1 (evaluation) plus modelseal's ``metrics`` and
  ``thresholds``;
- :class:`ModelSafety`: modelseal's model-safety scan;
- :class:`VerificationSummary`: SLSA VSA v1, written by ``verify --attach-vsa``;
- :class:`ModelSigning`: the OpenSSF model_signing v1.0 signature (``model.sig``).

The lifecycle predicate is :class:`modelseal.lifecycle.predicate.LifecycleRecord`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from modelseal.attest.payload import (
    ResourceDescriptor,
    as_object,
    descriptors,
    descriptors_to_list,
    pop_list,
    pop_object,
    pop_str,
    pop_str_list,
    put,
)
from modelseal.errors import InputError
from modelseal.formats import (
    LINK_PREDICATE,
    MODEL_SIGNING_PREDICATE,
    SAFETY_PREDICATE,
    SLSA_PROVENANCE_PREDICATE,
    TEST_RESULT_PREDICATE,
    VSA_PREDICATE,
)

RESULTS = ("PASSED", "WARNED", "FAILED")
"""test-result v0.1 and model-safety results."""


def _copy(d: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if d is None else dict(d)


# ---------------------------------------------------------------------------------------------
# link v0.3


@dataclass(frozen=True, slots=True)
class LinkPredicate:
    """One step as in-toto links record it: name, command, materials, byproducts, environment.

    The step's products are the Statement's subjects, not part of the predicate.
    """

    PREDICATE_TYPES: ClassVar[tuple[str, ...]] = (LINK_PREDICATE,)

    name: str
    command: list[str] | None = None
    materials: list[ResourceDescriptor] | None = None
    byproducts: dict[str, Any] | None = None
    environment: dict[str, Any] | None = None
    unrecognized: dict[str, Any] = field(default_factory=dict)

    @property
    def return_value(self) -> Any:
        """``byproducts["return-value"]`` as written (None when the link ran no command)."""
        return (self.byproducts or {}).get("return-value")

    @classmethod
    def from_dict(cls, data: Any) -> LinkPredicate:
        """Read a link predicate; InputError names what is wrong."""
        what = "link predicate"
        d = as_object(data, what)
        name = pop_str(d, "name", what, required=True)
        assert name is not None
        command = pop_str_list(d, "command", what)
        materials = descriptors(pop_list(d, "materials", what), "link materials")
        byproducts = pop_object(d, "byproducts", what)
        environment = pop_object(d, "environment", what)
        return cls(name, command, materials, byproducts, environment, d)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, unrecognized fields included."""
        d: dict[str, Any] = {"name": self.name}
        put(d, "command", None if self.command is None else list(self.command))
        put(d, "materials", descriptors_to_list(self.materials))
        put(d, "byproducts", _copy(self.byproducts))
        put(d, "environment", _copy(self.environment))
        d.update(self.unrecognized)
        return d


# ---------------------------------------------------------------------------------------------
# SLSA provenance v1


@dataclass(frozen=True, slots=True)
class BuildDefinition:
    """SLSA ``buildDefinition``: what was run, with which parameters and inputs."""

    build_type: str
    external_parameters: dict[str, Any]
    internal_parameters: dict[str, Any] | None = None
    resolved_dependencies: list[ResourceDescriptor] | None = None
    unrecognized: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any) -> BuildDefinition:
        """Read a buildDefinition."""
        what = "provenance buildDefinition"
        d = as_object(data, what)
        build_type = pop_str(d, "buildType", what, required=True)
        assert build_type is not None
        external = pop_object(d, "externalParameters", what)
        if external is None:
            raise InputError(f"{what}: externalParameters is missing")
        internal = pop_object(d, "internalParameters", what)
        deps = descriptors(pop_list(d, "resolvedDependencies", what), "resolvedDependencies")
        return cls(build_type, external, internal, deps, d)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, unrecognized fields included."""
        d: dict[str, Any] = {"buildType": self.build_type,
                             "externalParameters": dict(self.external_parameters)}
        put(d, "internalParameters", _copy(self.internal_parameters))
        put(d, "resolvedDependencies", descriptors_to_list(self.resolved_dependencies))
        d.update(self.unrecognized)
        return d


@dataclass(frozen=True, slots=True)
class Builder:
    """SLSA ``runDetails.builder``: who ran the build."""

    id: str
    version: dict[str, Any] | None = None
    builder_dependencies: list[ResourceDescriptor] | None = None
    unrecognized: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any) -> Builder:
        """Read a builder."""
        what = "provenance builder"
        d = as_object(data, what)
        ident = pop_str(d, "id", what, required=True)
        assert ident is not None
        version = pop_object(d, "version", what)
        deps = descriptors(pop_list(d, "builderDependencies", what), "builderDependencies")
        return cls(ident, version, deps, d)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, unrecognized fields included."""
        d: dict[str, Any] = {"id": self.id}
        put(d, "version", _copy(self.version))
        put(d, "builderDependencies", descriptors_to_list(self.builder_dependencies))
        d.update(self.unrecognized)
        return d


@dataclass(frozen=True, slots=True)
class RunDetails:
    """SLSA ``runDetails``: the builder and the run's metadata (invocation id, times)."""

    builder: Builder
    metadata: dict[str, Any] | None = None
    byproducts: list[ResourceDescriptor] | None = None
    unrecognized: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any) -> RunDetails:
        """Read runDetails."""
        what = "provenance runDetails"
        d = as_object(data, what)
        if "builder" not in d:
            raise InputError(f"{what}: builder is missing")
        builder = Builder.from_dict(d.pop("builder"))
        metadata = pop_object(d, "metadata", what)
        byproducts = descriptors(pop_list(d, "byproducts", what), "runDetails byproducts")
        return cls(builder, metadata, byproducts, d)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, unrecognized fields included."""
        d: dict[str, Any] = {"builder": self.builder.to_dict()}
        put(d, "metadata", _copy(self.metadata))
        put(d, "byproducts", descriptors_to_list(self.byproducts))
        d.update(self.unrecognized)
        return d


@dataclass(frozen=True, slots=True)
class Provenance:
    """SLSA provenance v1: ``buildDefinition`` and ``runDetails``."""

    PREDICATE_TYPES: ClassVar[tuple[str, ...]] = (SLSA_PROVENANCE_PREDICATE,)

    build_definition: BuildDefinition
    run_details: RunDetails
    unrecognized: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any) -> Provenance:
        """Read a provenance predicate; InputError names what is wrong."""
        d = as_object(data, "provenance predicate")
        for key in ("buildDefinition", "runDetails"):
            if key not in d:
                raise InputError(f"provenance predicate: {key} is missing")
        return cls(BuildDefinition.from_dict(d.pop("buildDefinition")),
                   RunDetails.from_dict(d.pop("runDetails")), d)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, unrecognized fields included."""
        d: dict[str, Any] = {"buildDefinition": self.build_definition.to_dict(),
                             "runDetails": self.run_details.to_dict()}
        d.update(self.unrecognized)
        return d


# ---------------------------------------------------------------------------------------------
# test result v0.1


@dataclass(frozen=True, slots=True)
class TestResult:
    """in-toto test-result v0.1, with modelseal's ``metrics`` and declared ``thresholds``."""

    __test__: ClassVar[bool] = False  # not a pytest class, despite its name
    PREDICATE_TYPES: ClassVar[tuple[str, ...]] = (TEST_RESULT_PREDICATE,)

    result: str
    configuration: list[ResourceDescriptor] | None = None
    url: str | None = None
    passed_tests: list[str] | None = None
    warned_tests: list[str] | None = None
    failed_tests: list[str] | None = None
    metrics: dict[str, Any] | None = None
    thresholds: list[dict[str, Any]] | None = None
    unrecognized: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any) -> TestResult:
        """Read a test-result predicate; InputError names what is wrong."""
        what = "test-result predicate"
        d = as_object(data, what)
        result = pop_str(d, "result", what, required=True)
        if result not in RESULTS:
            raise InputError(f"{what}: result {result!r} is not one of {', '.join(RESULTS)}")
        configuration = descriptors(pop_list(d, "configuration", what), "configuration")
        url = pop_str(d, "url", what)
        passed = pop_str_list(d, "passedTests", what)
        warned = pop_str_list(d, "warnedTests", what)
        failed = pop_str_list(d, "failedTests", what)
        metrics = pop_object(d, "metrics", what)
        raw = pop_list(d, "thresholds", what)
        thresholds = None if raw is None else [
            as_object(t, f"{what}: thresholds[{i}]") for i, t in enumerate(raw)]
        return cls(result, configuration, url, passed, warned, failed, metrics, thresholds, d)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, unrecognized fields included."""
        d: dict[str, Any] = {"result": self.result}
        put(d, "configuration", descriptors_to_list(self.configuration))
        put(d, "url", self.url)
        for key, tests in (("passedTests", self.passed_tests),
                           ("warnedTests", self.warned_tests),
                           ("failedTests", self.failed_tests)):
            put(d, key, None if tests is None else list(tests))
        put(d, "metrics", _copy(self.metrics))
        put(d, "thresholds", None if self.thresholds is None else
            [dict(t) for t in self.thresholds])
        d.update(self.unrecognized)
        return d


# ---------------------------------------------------------------------------------------------
# model safety


@dataclass(frozen=True, slots=True)
class SafetyFileEntry:
    """One scanned file of a model-safety predicate: path, digest, format, verdict, findings."""

    path: str
    sha256: str
    verdict: str
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_dict(cls, data: Any, what: str = "model-safety file") -> SafetyFileEntry:
        """Read one entry: path, ``digest.sha256`` and verdict are checked, the rest kept."""
        d = as_object(data, what)
        path, verdict = d.get("path"), d.get("verdict")
        digest = d.get("digest")
        sha = digest.get("sha256") if isinstance(digest, dict) else None
        if not isinstance(path, str) or not isinstance(sha, str) or not isinstance(verdict, str):
            raise InputError(f"{what}: needs a path, a digest.sha256 and a verdict (strings)")
        return cls(path, sha, verdict, d)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object as read (or as :func:`modelseal.safety.safety_predicate` wrote)."""
        return dict(self.raw)


@dataclass(frozen=True, slots=True)
class ModelSafety:
    """modelseal's model-safety predicate: who scanned, when, the result, per-file verdicts.

    :func:`modelseal.safety.report_from_predicate` turns it into the scanner's report.
    """

    PREDICATE_TYPES: ClassVar[tuple[str, ...]] = (SAFETY_PREDICATE,)

    files: list[SafetyFileEntry]
    scanner: dict[str, Any] | None = None
    scanned_at: str | None = None
    result: str | None = None
    summary: dict[str, Any] | None = None
    unrecognized: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any) -> ModelSafety:
        """Read a model-safety predicate; InputError names what is wrong."""
        what = "model-safety predicate"
        d = as_object(data, what)
        raw_files = pop_list(d, "files", what)
        if raw_files is None:
            raise InputError(f"{what}: files is missing")
        files = [SafetyFileEntry.from_dict(f, f"{what}: files[{i}]")
                 for i, f in enumerate(raw_files)]
        scanner = pop_object(d, "scanner", what)
        scanned_at = pop_str(d, "scannedAt", what)
        result = pop_str(d, "result", what)
        if result is not None and result not in RESULTS:
            raise InputError(f"{what}: result {result!r} is not one of {', '.join(RESULTS)}")
        summary = pop_object(d, "summary", what)
        return cls(files, scanner, scanned_at, result, summary, d)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, unrecognized fields included."""
        d: dict[str, Any] = {}
        put(d, "scanner", _copy(self.scanner))
        put(d, "scannedAt", self.scanned_at)
        put(d, "result", self.result)
        put(d, "summary", _copy(self.summary))
        d["files"] = [f.to_dict() for f in self.files]
        d.update(self.unrecognized)
        return d


# ---------------------------------------------------------------------------------------------
# SLSA verification summary v1


@dataclass(frozen=True, slots=True)
class VerificationSummary:
    """SLSA VSA v1: who verified which resource against which policy, and the result."""

    PREDICATE_TYPES: ClassVar[tuple[str, ...]] = (VSA_PREDICATE,)

    verifier_id: str
    verification_result: str
    resource_uri: str | None = None
    time_verified: str | None = None
    policy: ResourceDescriptor | None = None
    input_attestations: list[ResourceDescriptor] | None = None
    verified_levels: list[str] | None = None
    dependency_levels: dict[str, Any] | None = None
    slsa_version: str | None = None
    verifier: dict[str, Any] = field(default_factory=dict)  # the rest of ``verifier``
    unrecognized: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any) -> VerificationSummary:
        """Read a VSA predicate; InputError names what is wrong."""
        what = "VSA predicate"
        d = as_object(data, what)
        verifier = pop_object(d, "verifier", what)
        if verifier is None:
            raise InputError(f"{what}: verifier is missing")
        verifier_id = pop_str(verifier, "id", f"{what}: verifier", required=True)
        result = pop_str(d, "verificationResult", what, required=True)
        if result not in ("PASSED", "FAILED"):
            raise InputError(f"{what}: verificationResult {result!r} is not PASSED or FAILED")
        assert verifier_id is not None and result is not None
        resource_uri = pop_str(d, "resourceUri", what)
        time_verified = pop_str(d, "timeVerified", what)
        policy = (ResourceDescriptor.from_dict(d.pop("policy"), f"{what}: policy")
                  if "policy" in d else None)
        inputs = descriptors(pop_list(d, "inputAttestations", what), "inputAttestations")
        levels = pop_str_list(d, "verifiedLevels", what)
        deps = pop_object(d, "dependencyLevels", what)
        slsa_version = pop_str(d, "slsaVersion", what)
        return cls(verifier_id, result, resource_uri, time_verified, policy, inputs, levels,
                   deps, slsa_version, verifier, d)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, unrecognized fields included."""
        d: dict[str, Any] = {"verifier": {"id": self.verifier_id, **self.verifier}}
        put(d, "timeVerified", self.time_verified)
        put(d, "resourceUri", self.resource_uri)
        put(d, "policy", None if self.policy is None else self.policy.to_dict())
        put(d, "inputAttestations", descriptors_to_list(self.input_attestations))
        d["verificationResult"] = self.verification_result
        put(d, "verifiedLevels", None if self.verified_levels is None
            else list(self.verified_levels))
        put(d, "dependencyLevels", _copy(self.dependency_levels))
        put(d, "slsaVersion", self.slsa_version)
        d.update(self.unrecognized)
        return d


# ---------------------------------------------------------------------------------------------
# OpenSSF model signing v1.0


@dataclass(slots=True)  # not frozen: a model has 100,000s (see ResourceDescriptor)
class ModelSigningResource:
    """One file a model_signing signature covers: its path, hash algorithm and digest."""

    name: str
    algorithm: str
    digest: str
    unrecognized: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, what: str = "model_signing resource") -> ModelSigningResource:
        """Read one resource; InputError names what is wrong."""
        d = as_object(data, what)
        name = pop_str(d, "name", what, required=True)
        algorithm = pop_str(d, "algorithm", what, required=True)
        digest = pop_str(d, "digest", what, required=True)
        assert name is not None and algorithm is not None and digest is not None
        return cls(name, algorithm, digest, d)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, unrecognized fields included."""
        return {"name": self.name, "algorithm": self.algorithm, "digest": self.digest,
                **self.unrecognized}


@dataclass(frozen=True, slots=True)
class ModelSigning:
    """The OpenSSF model_signing v1.0 predicate: how the model was serialized (``method``,
    ``hash_type``, ``ignore_paths``...) and the digest of every file."""

    PREDICATE_TYPES: ClassVar[tuple[str, ...]] = (MODEL_SIGNING_PREDICATE,)

    serialization: dict[str, Any]
    resources: list[ModelSigningResource]
    unrecognized: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any) -> ModelSigning:
        """Read a model_signing predicate; InputError names what is wrong."""
        what = "model_signing predicate"
        d = as_object(data, what)
        serialization = pop_object(d, "serialization", what)
        raw = pop_list(d, "resources", what)
        if serialization is None or raw is None:
            raise InputError(f"{what}: serialization and resources are required")
        resources = [ModelSigningResource.from_dict(r, f"{what}: resources[{i}]")
                     for i, r in enumerate(raw)]
        return cls(serialization, resources, d)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, unrecognized fields included."""
        return {"serialization": dict(self.serialization),
                "resources": [r.to_dict() for r in self.resources], **self.unrecognized}
