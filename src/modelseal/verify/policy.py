"""The deployer's policy file, compiled into composable requirement objects.

A policy (YAML) names what the deployer trusts and requires::

    layout: layouts/ml-pipeline.signed.json   # or registry/repo@sha256:... (pinned)
    layout_keys: [keys/owner.pub]             # every one must have signed the layout
    trusted_root: production                  # Sigstore root for keyless: production |
                                              #   staging | path to trusted_root.json
    required_predicates:                      # besides the layout's steps
      - https://cyclonedx.org/bom
      - {type: https://slsa.dev/provenance/v1, step: train}
    distinct_signers: [[train, approve]]
    max_attestation_age: 90d
    required_stage: production                # lifecycle (docs/lifecycle.md): also
    stage_max_age: 30d                        #   deprecated, require_trusted_time,
                                              #   trusted_tsa, check_tag
    model_safety: true                        # or {include_suspicious: true}

Unknown keys are a UsageError naming the key. Each entry becomes a requirement object
(``requirements``); loading reads the YAML and key files, checking does no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelseal._util.json import check_value, type_name
from modelseal._util.limits import MAX_METADATA_BYTES
from modelseal._util.time import parse_duration
from modelseal.errors import InputError, UsageError
from modelseal.formats import LIFECYCLE_PREDICATE, SAFETY_PREDICATE
from modelseal.refs import is_reference
from modelseal.verify.lifecycle_requirement import (
    LIFECYCLE_POLICY_KEYS,
    LifecycleRequirement,
    compile_lifecycle,
)
from modelseal.verify.requirements import (
    AllOf,
    Attestation,
    DistinctSigners,
    Facts,
    MaxAge,
    ModelSafety,
    RequiredPredicate,
    Requirement,
    candidates,
)

if TYPE_CHECKING:
    from securesystemslib.signer import Key


POLICY_KEYS = ("version", "layout", "layout_keys", "trusted_root", "final_step",
               "required_predicates", "distinct_signers", "max_attestation_age",
               "model_safety", *LIFECYCLE_POLICY_KEYS)


# ---------------------------------------------------------------------------------------------
# the policy file


@dataclass
class Policy:
    """A loaded policy: what to trust, and the extra requirements."""

    layout: str  # a file path (absolute) or an OCI reference pinned by digest
    layout_keys: dict[str, Key]
    trusted_root: str = "production"
    final_step: str | None = None
    requirements: list[Requirement] = field(default_factory=list)
    source: str = ""
    distinct_pairs: list[tuple[str, str]] = field(default_factory=list)
    digest: str = ""  # sha256 of the policy file, for the verification summary

    @property
    def layout_is_oci(self) -> bool:
        return not Path(self.layout).is_absolute() and is_reference(self.layout)

    def requirement(self) -> AllOf:
        return AllOf(list(self.requirements))

    @property
    def lifecycle(self) -> LifecycleRequirement | None:
        """The lifecycle requirement, which the pipeline prepares with what it fetched."""
        return next((r for r in self.requirements if isinstance(r, LifecycleRequirement)), None)

    def predicate_types(self) -> set[str]:
        """Predicate types the requirements look at (besides the layout's steps)."""
        out: set[str] = set()
        for r in self.requirements:
            if isinstance(r, (RequiredPredicate, ModelSafety)):
                out.add(r.predicate_type)
            elif isinstance(r, LifecycleRequirement):
                out.add(LIFECYCLE_PREDICATE)
        return out


def _unknown(d: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    for k in d:
        if k not in allowed:
            raise UsageError(f"{where}: unknown key {k!r}",
                             hint="allowed keys: " + ", ".join(allowed))


def _str(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v:
        raise UsageError(f"{where} must be a non-empty string")
    return v


def _opt_str(v: Any, where: str) -> str | None:
    return None if v is None else _str(v, where)


def _list(v: Any, where: str) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise UsageError(f"{where} must be a list, not {type_name(v)}")
    return v


def _exists(p: str, where: str) -> bool:
    """Whether a path names something; a path the OS cannot even look up does not."""
    if "\x00" in p:  # pathlib would quietly say "no"; the file would then fail to open
        raise UsageError(f"{where}: {p!r} contains a NUL character")
    try:
        return Path(p).exists()
    except ValueError as e:  # an embedded NUL
        raise UsageError(f"{where}: {p!r} is not a usable path ({e})") from e
    except OSError:  # e.g. a name too long
        return False


def compile_policy(data: Mapping[str, Any], *, base_dir: Path | None = None,
                   source: str = "policy",
                   load_key: Callable[[str], Key] | None = None) -> Policy:
    """A Policy from parsed YAML. Relative paths are relative to ``base_dir``."""
    from modelseal.intoto_layout.model import key_dict, key_identity, load_functionary_key

    if not isinstance(data, Mapping):
        raise UsageError(f"{source}: a policy is a YAML mapping")
    _unknown(data, POLICY_KEYS, source)
    version = data.get("version", 1)
    if isinstance(version, bool) or version != 1:
        raise UsageError(f"{source}: version {data.get('version')!r} is not supported (1)")
    base = base_dir or Path.cwd()

    def path(p: str) -> str:
        return p if Path(p).is_absolute() else str(base / p)

    layout = _str(data.get("layout"), f"{source}: layout")
    if not _exists(path(layout), f"{source}: layout") and is_reference(layout):
        if "@sha256:" not in layout:
            raise UsageError(f"{source}: layout {layout!r} is not a file, and as an OCI "
                             "reference it must be pinned by digest (REF@sha256:...): a tag "
                             "can move")
    else:
        layout = path(layout)
    trusted_root = data.get("trusted_root", "production")
    trusted_root = _str(trusted_root, f"{source}: trusted_root")
    if trusted_root not in ("production", "staging"):
        trusted_root = path(trusted_root)
    final_step = data.get("final_step")
    if final_step is not None:
        final_step = _str(final_step, f"{source}: final_step")

    reqs: list[Requirement] = []
    for item in _list(data.get("required_predicates"), f"{source}: required_predicates"):
        if isinstance(item, str):
            reqs.append(RequiredPredicate(item))
        elif isinstance(item, Mapping):
            _unknown(item, ("type", "step"), f"{source}: required_predicates entry")
            reqs.append(RequiredPredicate(_str(item.get("type"), f"{source}: type"),
                                          _opt_str(item.get("step"), f"{source}: step")))
        else:
            raise UsageError(f"{source}: required_predicates entries are URIs or "
                             "{type, step} mappings")
    pairs: list[tuple[str, str]] = []
    for pair in _list(data.get("distinct_signers"), f"{source}: distinct_signers"):
        if not (isinstance(pair, list) and len(pair) == 2
                and all(isinstance(x, str) for x in pair)):
            raise UsageError(f"{source}: distinct_signers entries are [STEP, STEP] pairs, "
                             f"got {pair!r}")
        if pair[0] == pair[1]:
            raise UsageError(f"{source}: distinct_signers [{pair[0]}, {pair[1]}] names one step "
                             "twice")
        pairs.append((pair[0], pair[1]))
        reqs.append(DistinctSigners(pair[0], pair[1]))
    lifecycle = compile_lifecycle(data, source=source, path=path)
    if lifecycle is not None:
        reqs.append(lifecycle)
    safety = data.get("model_safety")
    if safety is True:
        reqs.append(ModelSafety())
    elif isinstance(safety, Mapping):
        _unknown(safety, ("include_suspicious", "include_unknown", "step", "predicate_type"),
                 f"{source}: model_safety")
        for flag in ("include_suspicious", "include_unknown"):
            if not isinstance(safety.get(flag, False), bool):
                raise UsageError(f"{source}: model_safety.{flag} is true or false")
        reqs.append(ModelSafety(bool(safety.get("include_suspicious", False)),
                                _opt_str(safety.get("step"), f"{source}: model_safety.step"),
                                _opt_str(safety.get("predicate_type"),
                                         f"{source}: model_safety.predicate_type")
                                or SAFETY_PREDICATE,
                                include_unknown=bool(safety.get("include_unknown", False))))
    elif safety not in (None, False):
        raise UsageError(f"{source}: model_safety is true, false or a mapping")
    age = data.get("max_attestation_age")
    if age is not None:
        # the scans model_safety judges count too: an old scan is no scan of today's risks
        extra = [r for r in reqs if isinstance(r, (RequiredPredicate, ModelSafety))]

        def counted(facts: Facts, extra: list[RequiredPredicate | ModelSafety] = extra
                    ) -> list[Attestation]:
            out = []
            for r in extra:
                out += candidates(facts, r.predicate_type, r.step, r.name)[0]
            return out

        try:
            max_age = parse_duration(age)
        except (OverflowError, ValueError) as e:  # 1e400, nan, 10**30 days
            raise UsageError(f"{source}: max_attestation_age {age!r} is not a usable "
                             "duration") from e
        reqs.append(MaxAge(max_age, counted))
    raw_keys = data.get("layout_keys")
    if isinstance(raw_keys, str):
        raw_keys = [raw_keys]
    if not isinstance(raw_keys, list) or not raw_keys:
        raise UsageError(f"{source}: layout_keys must list at least one public key")
    loader = load_key or load_functionary_key
    keys: dict[str, Key] = {}
    seen: dict[str, str] = {}  # key identity -> the entry that gave it
    for spec in raw_keys:
        s = _str(spec, f"{source}: layout_keys entry")
        if s.startswith("sigstore:"):
            raise UsageError(f"{source}: layout_keys {s!r}: keyless layout signatures are not "
                             "supported; sign the layout with a key (file, HSM or KMS)")
        where = f"{source}: layout_keys entry"
        try:
            k = loader(s if ":" in s and not _exists(path(s), where) else path(s))
        except (OSError, ValueError, TypeError, AttributeError, RecursionError) as e:
            raise InputError(f"{where} {s!r} is not a usable public key: {e}") from e
        ident = key_identity(key_dict(k))
        if ident in seen:
            # two entries, one key: "every listed key signed" would count one signer twice
            raise UsageError(f"{source}: layout_keys {seen[ident]!r} and {s!r} are the same "
                             "key (same key material); list each layout owner once")
        seen[ident] = s
        keys[k.keyid] = k
    return Policy(layout, keys, trusted_root, final_step, reqs, source, pairs)


def load_policy(path: str | Path) -> Policy:
    """Read and compile a policy file (YAML or JSON)."""
    import yaml

    p = Path(path)
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_METADATA_BYTES + 1)
    except FileNotFoundError as e:
        raise UsageError(f"policy {p}: no such file") from e
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        raise InputError(f"policy {p} cannot be read: {getattr(e, 'strerror', None) or e}"
                         ) from e
    if len(raw) > MAX_METADATA_BYTES:
        raise UsageError(f"policy {p} is larger than {MAX_METADATA_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"policy {p} is not UTF-8 text (byte {e.start})") from e
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as e:
        raise UsageError(f"policy {p} is not valid YAML: {e}") from e
    # plain values only, within the bounds (YAML aliases can stand for gigabytes)
    check_value(data, what=f"policy {p}", error=UsageError)
    policy = compile_policy(data or {}, base_dir=p.resolve().parent, source=f"policy {p}")
    policy.digest = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return policy
