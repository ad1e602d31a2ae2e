"""From bytes to what ``lifecycle_chain.evaluate`` judges: the layout's lifecycle rules, key
material, and lifecycle bundles verified against the layout's keys and the trusted TSA certificates.

No network and no files: the caller fetched the bytes. The layout section that says who may
sign which transition is part of the layout's ``modelseal`` extension (signed by the layout
owner, ignored by in-toto)::

    "modelseal": {"lifecycle": {
        "promote:staging":    {"pubkeys": [KEYID, ...], "threshold": 1},
        "promote:production": {"pubkeys": [KEYID, KEYID, KEYID], "threshold": 2,
                               "distinct_from": ["train"]},
        "deprecate": {...}, "retire": {...}, "correct": {...}}}

Keys are the layout's ``keys`` entries; they count by their material, never by key id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from modelseal.attest.lifecycle import record_digest, record_of_statement
from modelseal.errors import InputError, VerificationError
from modelseal.formats import LIFECYCLE_ACTIONS, LIFECYCLE_PREDICATE
from modelseal.verify.lifecycle_chain import LifecycleRules, SignedRecord, TransitionRule

if TYPE_CHECKING:
    from cryptography.x509 import Certificate

    from modelseal.intoto_layout.model import TrustedLayout
    from modelseal.verify.decision import Evidence

LIFECYCLE_EXTENSION = "lifecycle"
MAX_LIFECYCLE_BUNDLES = 1000  # per model and verification


def layout_key_materials(tl: TrustedLayout) -> dict[str, str]:
    """Layout key id -> key material (``layout.key_identity``, the one definition that
    thresholds, separation of duties and names count everywhere)."""
    from modelseal.intoto_layout.model import key_identity

    return {kid: key_identity(d) for kid, d in tl.layout.keys.items()}


def rules_from_layout(tl: TrustedLayout) -> LifecycleRules:
    """The lifecycle rules of a verified layout (empty when it has none)."""
    materials = layout_key_materials(tl)
    # the functionary names the layout gives (`layout new` takes them from the key files), as
    # the verifier's step table shows them: "frank (key 1a2b...)", never a bare key id
    names = tl.describe()
    raw = tl.extension.get(LIFECYCLE_EXTENSION) or {}
    if not isinstance(raw, Mapping):
        raise InputError("layout: modelseal.lifecycle must be an object")
    steps = {s.name for s in tl.layout.steps}
    out: dict[str, TransitionRule] = {}
    for name, spec in raw.items():
        where = f"layout: modelseal.lifecycle.{name}"
        action, _, stage = str(name).partition(":")
        if action not in LIFECYCLE_ACTIONS or \
                (action == "promote") != bool(stage):
            raise InputError(f"{where}: transitions are promote:STAGE, promote:*, deprecate, "
                             "retire or correct")
        if not isinstance(spec, Mapping) or not isinstance(spec.get("pubkeys"), list):
            raise InputError(f"{where}: needs pubkeys (key ids of the layout)")
        unknown = [k for k in spec["pubkeys"] if k not in materials]
        if unknown:
            raise InputError(f"{where}: key {str(unknown[0])[:16]} is not in the layout's keys")
        signers = frozenset(materials[k] for k in spec["pubkeys"])
        threshold = spec.get("threshold", 1)
        if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1 \
                or threshold > len(signers):
            raise InputError(f"{where}: threshold {threshold!r} must be 1..{len(signers)} "
                             "(distinct keys)")
        distinct = spec.get("distinct_from") or []
        if not isinstance(distinct, list) or any(s not in steps for s in distinct):
            raise InputError(f"{where}: distinct_from must list steps of the layout")
        out[str(name)] = TransitionRule(str(name), signers, threshold,
                                        tuple(str(s) for s in distinct))
    # a functionary's name for people: the key and what the layout lets it do
    roles: dict[str, list[str]] = {}
    for step in tl.layout.steps:
        for kid in step.pubkeys:
            if kid in materials:
                roles.setdefault(materials[kid], []).append(step.name)
    for rule in out.values():
        for m in rule.signers:
            roles.setdefault(m, []).append(rule.name)
    for m, rs in roles.items():
        names[m] = f"{names[m]} ({', '.join(rs)})"
    return LifecycleRules(out, names)


def verify_lifecycle_bundles(
    evidence: Sequence[Evidence],
    tl: TrustedLayout,
    *,
    tsa_roots: Sequence[Certificate] = (),
    trusted_root: Any = None,
) -> tuple[list[SignedRecord], list[tuple[str, str]]]:
    """Verify lifecycle bundles against the layout's keys; (records, (evidence, why ignored)).

    Each bundle's RFC 3161 timestamps are checked against ``tsa_roots``; a timestamp that
    does not verify gives no trusted time and is named among the ignored."""
    from modelseal.attest.bundle import KeylessIdentity, parse_bundle, verify_bundle
    from modelseal.attest.tsa import verified_times
    from modelseal.verify.decision import layout_signers

    materials = layout_key_materials(tl)
    rules = rules_from_layout(tl)
    keyed, keyless = layout_signers(tl)
    out: list[SignedRecord] = []
    ignored: list[tuple[str, str]] = []
    for ev in evidence[:MAX_LIFECYCLE_BUNDLES]:
        try:
            pb = parse_bundle(ev.bundle)
            vs = verify_bundle(ev.bundle, keys=keyed, keyless=list(keyless),
                               trusted_root=trusted_root)
        except (InputError, VerificationError) as e:
            ignored.append((ev.id, f"signature refused: {e.message}"))
            continue
        if vs.predicate_type != LIFECYCLE_PREDICATE:
            ignored.append((ev.id, f"not a lifecycle record ({vs.predicate_type})"))
            continue
        try:
            rec = record_of_statement(vs.statement)
        except InputError as e:
            ignored.append((ev.id, f"malformed lifecycle record: {e.message}"))
            continue
        kid = vs.keyid if vs.keyid is not None else keyless[
            KeylessIdentity(str(vs.identity), str(vs.issuer))]
        material = materials[kid]
        check = verified_times(pb.raw, tsa_roots) if tsa_roots else None
        trusted = check.earliest if check else None
        if check:
            ignored.extend((ev.id, f"timestamp refused: {r}") for r in check.refused)
        out.append(SignedRecord(rec, record_digest(vs.statement), ev.id, material,
                                rules.names.get(material, kid[:16]),
                                trusted.time if trusted else None,
                                trusted.tsa if trusted else None))
    if len(evidence) > MAX_LIFECYCLE_BUNDLES:
        ignored.append(("", f"{len(evidence) - MAX_LIFECYCLE_BUNDLES} lifecycle bundles beyond "
                            f"the limit of {MAX_LIFECYCLE_BUNDLES} were not read"))
    return out, ignored
