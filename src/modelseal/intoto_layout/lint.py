"""in-toto layouts, lint (``layout check``): what in-toto accepts but a deployer should not.
Pure: a layout document in, findings out."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from modelseal._util.time import parse_time, rfc3339
from modelseal.errors import InputError
from modelseal.intoto_layout.model import (
    EXTENSION,
    describe_key,
    functionary_names,
    key_identity,
    step_pairs,
    to_in_toto,
)

SOON = timedelta(days=30)


@dataclass(frozen=True)
class LintFinding:
    """One problem ``layout check`` found. ``error`` findings make the check fail."""

    level: str  # "error" | "warning"
    code: str
    message: str
    step: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The finding as ``layout check --json`` prints it."""
        return {"level": self.level, "code": self.code, "message": self.message,
                "step": self.step}


@dataclass
class CheckReport:
    """What ``layout check`` found, in the order it looked."""

    findings: list[LintFinding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no finding is an error (warnings alone pass)."""
        return not any(f.level == "error" for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        """The report as ``layout check --json`` prints it."""
        return {"ok": self.ok, "findings": [f.to_dict() for f in self.findings]}


def _rules(item: Mapping[str, Any]) -> list[tuple[str, list[list[str]]]]:
    return [("materials", list(item.get("expected_materials") or [])),
            ("products", list(item.get("expected_products") or []))]


def check_layout(doc: Mapping[str, Any], *, now: datetime | None = None,
                 soon: timedelta = SOON,
                 separate: Sequence[tuple[str, str]] = ()) -> CheckReport:
    """Lint a layout document (pure). Catches what in-toto accepts but a deployer should not:

    - a MATCH rule with no DISALLOW after it (a failed MATCH alone lets a mismatch pass);
    - an expired layout (error) or one expiring within ``soon`` (warning);
    - a threshold larger than the step's keys, or a step key missing from ``keys``;
    - a key allowed to sign both steps of a separation-of-duties pair (from the layout's
      extension and ``separate``);
    - a step whose products no later step consumes (MATCH ... FROM it), other than the final
      step and steps that may produce nothing.
    """
    from in_toto.rulelib import unpack_rule
    from securesystemslib.exceptions import FormatError

    rep = CheckReport()
    add = rep.findings.append
    now = now or datetime.now(UTC)
    try:
        to_in_toto(doc)
    except InputError as e:
        add(LintFinding("error", "invalid", str(e)))
    steps = [s for s in doc.get("steps") or [] if isinstance(s, dict)]
    items = steps + [i for i in doc.get("inspect") or [] if isinstance(i, dict)]
    keys = doc.get("keys") or {}
    ext = doc.get(EXTENSION) if isinstance(doc.get(EXTENSION), dict) else {}
    assert isinstance(ext, dict)

    # rules: MATCH needs a later DISALLOW
    consumed_from: set[str] = set()
    for item in items:
        name = str(item.get("name"))
        for kind, rules in _rules(item):
            for i, rule in enumerate(rules):
                try:
                    r = unpack_rule(list(rule))
                except (FormatError, TypeError) as e:
                    add(LintFinding("error", "bad-rule", f"step {name}: {kind} rule {rule}: {e}",
                                name))
                    continue
                if r["rule_type"] != "match":
                    continue
                if r["dest_name"] != name:
                    consumed_from.add(str(r["dest_name"]))
                later = rules[i + 1:]
                if not any(isinstance(x, list) and x and str(x[0]).upper() == "DISALLOW"
                           for x in later):
                    add(LintFinding("error", "match-without-disallow",
                                f"step {name}: {kind} rule {' '.join(map(str, rule))} is not "
                                "followed by a DISALLOW rule: in-toto lets an artifact that "
                                "fails this MATCH pass silently (add DISALLOW *)", name))

    # expiry
    exp_raw = doc.get("expires")
    try:
        exp = parse_time(str(exp_raw))
        if exp <= now:
            add(LintFinding("error", "expired", f"the layout expired on {rfc3339(exp)}"))
        elif exp - now < soon:
            days = (exp - now).days
            add(LintFinding("warning", "expires-soon",
                        f"the layout expires on {rfc3339(exp)} (in {days} days): sign a new one"))
    except InputError:
        add(LintFinding("error", "invalid-expires", f"expires {exp_raw!r} is not a date"))

    # keys: one functionary per key material (key_identity), whatever the key ids say
    ident = {str(kid): key_identity(d) for kid, d in keys.items() if isinstance(d, Mapping)}
    names = functionary_names(doc)
    by_material: dict[str, list[str]] = {}
    for kid, mat in ident.items():
        by_material.setdefault(mat, []).append(kid)
    for kids in sorted(by_material.values()):
        if len(kids) > 1:
            add(LintFinding("error", "duplicate-key",
                        "the same key material is listed under "
                        f"{len(kids)} key ids ({', '.join(k[:16] for k in sorted(kids))}): it "
                        "is one functionary, and counts once towards thresholds and "
                        "separation of duties; list it once"))
    named: dict[str, set[str]] = {}
    for kid, n in names.items():
        named.setdefault(n, set()).add(ident.get(kid, kid))
    for n, ids in sorted(named.items()):
        if len(ids) > 1:
            add(LintFinding("warning", "ambiguous-name",
                        f"{len(ids)} different keys are all named {n!r}"))

    def material(kids: Iterable[Any]) -> set[str]:
        return {ident.get(str(k), str(k)) for k in kids}

    # thresholds and keys
    for s in steps:
        name = str(s.get("name"))
        pubkeys = list(s.get("pubkeys") or [])
        threshold = s.get("threshold", 1)
        distinct = len(material(pubkeys))
        if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1:
            add(LintFinding("error", "bad-threshold", f"step {name}: threshold {threshold!r} "
                        "must be a positive integer", name))
        elif threshold > distinct:
            add(LintFinding("error", "threshold-above-keys",
                        f"step {name}: threshold {threshold} but only {distinct} distinct "
                        "functionary key(s): the step can never pass", name))
        for kid in pubkeys:
            if kid not in keys:
                add(LintFinding("error", "unknown-key",
                            f"step {name}: key {str(kid)[:16]} is not in the layout's keys",
                            name))
    step_names = {str(s.get("name")) for s in steps}
    rv = ext.get("return_values")
    if rv is not None:
        if not isinstance(rv, dict) or not all(
                isinstance(v, list) and v and all(isinstance(x, int) and not isinstance(x, bool)
                                                  for x in v) for v in rv.values()):
            add(LintFinding("error", "bad-return-values", "modelseal.return_values maps a step "
                        "to the list of return values that count as done, e.g. {\"test\": [0]}"))
        else:
            for st in sorted(set(map(str, rv)) - step_names):
                add(LintFinding("error", "unknown-step", f"return values for step {st}, which "
                            "the layout does not have", st))
    fin = ext.get("final_step")
    if fin is not None and str(fin) not in step_names:
        add(LintFinding("error", "unknown-step", f"final step {fin}: the layout has no such step"))

    # separation of duties
    pairs = list(dict.fromkeys([*step_pairs(ext.get("separation_of_duties")), *separate]))
    by_name = {str(s.get("name")): s for s in steps}
    for a, b in pairs:
        if a not in by_name or b not in by_name:
            missing = a if a not in by_name else b
            # a rule about a step that does not exist would hold vacuously: an error
            add(LintFinding("error", "unknown-step",
                        f"separation of duties {a}/{b}: the layout has no step {missing}"))
            continue
        shared = (material(by_name[a].get("pubkeys") or [])
                  & material(by_name[b].get("pubkeys") or []))
        for mat in sorted(shared):
            kid = sorted(by_material.get(mat, [mat]))[0]
            add(LintFinding("error", "separation-of-duties",
                        f"{describe_key(kid, keys.get(kid), names.get(kid))} may sign both "
                        f"{a} and {b}, which must be done by different people", a))

    # products nothing consumes
    final = ext.get("final_step") or (str(steps[-1].get("name")) if steps else None)
    for s in steps:
        name = str(s.get("name"))
        if name == final or name in consumed_from:
            continue
        prules = list(s.get("expected_products") or [])
        produces_nothing = all(isinstance(r, list) and r and str(r[0]).upper() == "DISALLOW"
                               for r in prules) and bool(prules)
        if produces_nothing:
            continue
        add(LintFinding("error", "unconsumed-products",
                    f"step {name}: its products are consumed by no other step (no MATCH ... "
                    f"FROM {name}), so nothing ties them to the final product", name))
    return rep
