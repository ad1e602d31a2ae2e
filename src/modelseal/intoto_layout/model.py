"""in-toto layouts: templates, filling in functionaries, signing, loading, and checks.

A layout is the in-toto 3.x layout document (``_type: layout``), signed in a DSSE envelope
(payloadType ``application/vnd.in-toto+json``) exactly as ``in-toto-sign`` writes it, so
``in-toto-verify`` and other in-toto tools read our layouts. The classic Metablock format
(``{"signed": ..., "signatures": ...}``) is read too.

modelseal keeps two things in the layout that in-toto does not model:

- **Sigstore identities as functionaries.** A functionary key may be a securesystemslib
  ``SigstoreKey`` (keytype ``sigstore-oidc``, scheme ``Fulcio``, keyval ``{identity,
  issuer}``), the key type securesystemslib itself uses for keyless signers. Its keyid is
  computed like every other key's, so ``pubkeys`` and thresholds work unchanged; modelseal
  checks such a functionary's signatures with Sigstore, offline, against the policy's trusted
  root.
- **An extension object** ``"modelseal"`` (in-toto ignores unknown layout fields; the DSSE
  signature covers them): ``separation_of_duties`` (pairs of steps no key may sign both of),
  ``final_step`` (whose products must be exactly the model's files; default the last step),
  ``step_predicates`` (which Statement predicate types may evidence a step; default the link
  predicate only).

Nothing here touches the network; reading and writing files is limited to the helpers that
say so (``load_template``, ``read_layout_file``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelseal._util.time import parse_time
from modelseal.errors import InputError, UsageError, VerificationError
from modelseal.formats import (
    IN_TOTO_PAYLOAD_TYPE,
    LINK_PREDICATE,
    SIGSTORE_KEYTYPE,
)

if TYPE_CHECKING:
    from in_toto.models.layout import Layout
    from securesystemslib.signer import Key, Signer

EXTENSION = "modelseal"
SIGSTORE_SCHEME = "Fulcio"
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
TEMPLATES = ("ml-pipeline", "ml-pipeline-keyless", "ml-pipeline-hsm")
DEFAULT_VALIDITY = timedelta(days=180)
SOON = timedelta(days=30)
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def register_sigstore_keys() -> None:
    """Let securesystemslib (and so in-toto) read ``sigstore-oidc`` keys in layouts.

    securesystemslib leaves this registration to the application."""
    from securesystemslib.signer import KEY_FOR_TYPE_AND_SCHEME, SigstoreKey

    KEY_FOR_TYPE_AND_SCHEME.setdefault((SIGSTORE_KEYTYPE, SIGSTORE_SCHEME), SigstoreKey)


def parse_duration(text: str | int | float) -> timedelta:
    """``90d``, ``12h``, ``2w``, ``30m``, ``45s`` (or a number of seconds)."""
    if isinstance(text, bool):
        raise UsageError(f"duration {text!r} is not a duration")
    if isinstance(text, (int, float)):
        return timedelta(seconds=float(text))
    m = _DURATION.match(str(text))
    if not m:
        raise UsageError(f"duration {text!r} is not of the form NUMBER[s|m|h|d|w], e.g. 90d")
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


def iso(t: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ``, the one date format in-toto layouts accept."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------
# keys


def key_dict(key: Key) -> dict[str, Any]:
    """A key as a layout's ``keys`` entry (in-toto wants the keyid inside)."""
    d: dict[str, Any] = key.to_dict()
    d["keyid"] = key.keyid
    return d


def sigstore_key(identity: str, issuer: str = GITHUB_ISSUER) -> Key:
    """The securesystemslib SigstoreKey standing for a Sigstore identity as a functionary."""
    from securesystemslib.signer import SigstoreSigner

    register_sigstore_keys()
    _, key = SigstoreSigner.import_(identity, issuer, True)
    return key


def key_from_dict(keyid: str, d: Mapping[str, Any]) -> Key:
    """A securesystemslib Key from a layout ``keys`` entry."""
    from securesystemslib.signer import Key

    register_sigstore_keys()
    data = {k: copy.deepcopy(v) for k, v in d.items() if k != "keyid"}
    try:
        return Key.from_dict(keyid, data)
    except (KeyError, ValueError, TypeError) as e:
        raise InputError(f"key {keyid[:16]} in the layout cannot be read: {e}") from e


def is_sigstore_key(d: Mapping[str, Any]) -> bool:
    return d.get("keytype") == SIGSTORE_KEYTYPE


def key_identity(d: Mapping[str, Any]) -> str:
    """Who a key is: its key material, never its key id (DESIGN.md section 3).

    The one function that says when two keys are the same: thresholds, separation of duties,
    a policy's distinct signers, layout checks and names all count what it returns. A keyed
    key is ``sha256:`` of its DER SubjectPublicKeyInfo as ``cryptography`` re-encodes it, so
    the same public key in PEM, with other line breaks, as a compressed EC point or as raw
    ed25519 hex is one identity, whatever key id or scheme a key file claims. A Sigstore
    functionary is its (identity, issuer). Material that cannot be parsed stands for itself
    (its canonical JSON), so it never merges with another key."""
    import base64
    import hashlib

    keyval = d.get("keyval") if isinstance(d.get("keyval"), Mapping) else {}
    assert isinstance(keyval, Mapping)
    if is_sigstore_key(d):
        issuer, ident = (str(keyval.get(k, "")).strip() for k in ("issuer", "identity"))
        return f"sigstore:{issuer} {ident}"
    public = keyval.get("public")
    der: bytes | None = None
    if isinstance(public, str):
        from cryptography.hazmat.primitives import serialization as ser

        try:
            if "-----BEGIN" in public:
                loaded: Any = ser.load_pem_public_key(public.encode())
            elif str(d.get("keytype")) == "ed25519":
                from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

                loaded = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public))
            else:
                loaded = ser.load_der_public_key(base64.b64decode(public, validate=True))
            der = loaded.public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
        except (ValueError, TypeError):
            der = None
    if der is None:
        return "unparsed:" + hashlib.sha256(_canonical(dict(keyval))).hexdigest()
    return "sha256:" + hashlib.sha256(der).hexdigest()


def functionary_names(doc: Mapping[str, Any]) -> dict[str, str]:
    """keyid -> the functionary's name, from the layout extension's ``functionaries``."""
    ext = doc.get(EXTENSION)
    raw = ext.get("functionaries") if isinstance(ext, Mapping) else None
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): str(v) for k, v in raw.items() if isinstance(v, str) and v}


def describe_key(keyid: str, d: Mapping[str, Any] | None, name: str | None = None) -> str:
    """``trainer (key 1a2b3c4d5e6f7a8b)``, ``key 1a2b...`` or ``sigstore identity X (issuer
    Y)`` for messages: the functionary's name when the layout gives one."""
    if d is not None and is_sigstore_key(d):
        kv = d.get("keyval") or {}
        what = f"sigstore identity {kv.get('identity')} (issuer {kv.get('issuer')})"
    else:
        what = f"key {keyid[:16]}"
    return f"{name} ({what})" if name else what


def load_functionary_key(spec: str, *, default_issuer: str = GITHUB_ISSUER) -> Key:
    """A functionary's public key from a CLI spec.

    - ``sigstore:IDENTITY[?issuer=URL]``: a Sigstore identity (default issuer GitHub Actions);
    - ``hsm:...`` and other signer URIs: the public key of that signer (may need its PIN);
    - a path: a PEM public key, or a securesystemslib key as JSON.
    """
    from modelseal.attest.signers import load_public_key, load_signer, public_key_from_pem

    if spec.startswith("sigstore:"):
        ident, sep, query = spec[len("sigstore:"):].partition("?issuer=")
        if not ident:
            raise UsageError(f"functionary {spec!r}: write sigstore:IDENTITY[?issuer=URL]")
        return sigstore_key(ident, query if sep else default_issuer)
    path = Path(spec)
    if path.is_file():
        data = path.read_bytes()
        if data.lstrip().startswith(b"{"):
            try:
                d = json.loads(data)
                kid = d.pop("keyid", None)
                if not kid:
                    raise ValueError("no keyid in the key file")
                return key_from_dict(str(kid), d)
            except (ValueError, KeyError, TypeError) as e:
                raise InputError(f"{spec} is not a securesystemslib key: {e}") from e
        if b"PRIVATE KEY" in data:
            raise UsageError(f"{spec} is a private key: give the public key (.pub)")
        if b"-----BEGIN" in data:
            return public_key_from_pem(data)
        return load_public_key(path)
    if ":" in spec and not path.exists():
        return load_signer(spec).public_key
    raise UsageError(f"functionary key {spec!r}: no such file",
                     hint="give a PEM public key, sigstore:IDENTITY, or a signer URI (hsm:...)")


# ---------------------------------------------------------------------------------------------
# templates and new layouts


def templates_dirs() -> list[Path]:
    """Where templates are looked up: the repository's ``layouts/``, then package data."""
    out = [Path(__file__).resolve().parents[2] / "layouts"]
    with contextlib.suppress(ModuleNotFoundError, TypeError):
        out.append(Path(str(resources.files("modelseal") / "data" / "layouts")))
    return out


def load_template(name_or_path: str) -> dict[str, Any]:
    """A template by name (``ml-pipeline``...) or path; the unsigned layout document."""
    path = Path(name_or_path)
    if not path.is_file():
        for d in templates_dirs():
            cand = d / f"{name_or_path}.json"
            if cand.is_file():
                path = cand
                break
        else:
            raise UsageError(f"no layout template {name_or_path!r}",
                             hint="templates: " + ", ".join(TEMPLATES))
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise InputError(f"layout template {path} cannot be read: {e}") from e
    return payload_of(doc) if ("payload" in doc or "signed" in doc) else doc


def parse_functionaries(specs: Iterable[str]) -> list[tuple[str, str]]:
    """``STEP=KEY`` pairs from the command line, in order."""
    out = []
    for s in specs:
        step, sep, key = s.partition("=")
        if not sep or not step or not key:
            raise UsageError(f"functionary {s!r}: write STEP=KEY")
        out.append((step.strip(), key.strip()))
    return out


def new_layout(template: Mapping[str, Any], functionaries: Sequence[tuple[str, Key]], *,
               expires: datetime | None = None, now: datetime | None = None,
               thresholds: Mapping[str, int] | None = None,
               readme: str | None = None,
               names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A layout document from a template, with each step's functionary keys filled in.

    Every step must end up with at least ``threshold`` keys; in-toto's own validation runs
    on the result. The same key material given twice (under another key id, in another
    encoding) is one functionary: it is listed once. ``names`` (keyid -> functionary name)
    go into the extension's ``functionaries`` so that refusals name people, not key ids.
    """
    from modelseal.lifecycle.predicate import ACTIONS

    doc = copy.deepcopy(dict(template))
    steps = {s["name"]: s for s in doc.get("steps") or []}
    keys: dict[str, Any] = dict(doc.get("keys") or {})
    by_identity = {key_identity(d): kid for kid, d in keys.items() if isinstance(d, Mapping)}
    ext = doc.setdefault(EXTENSION, {})
    known = dict(ext.get("functionaries") or {}) if isinstance(ext, dict) else {}
    # lifecycle transitions (promote:STAGE, deprecate, retire, correct: docs/lifecycle.md) are
    # signed like steps but live in the extension: no link is ever expected for them
    lifecycle = ext.setdefault("lifecycle", {}) if isinstance(ext, dict) else {}

    def slot(name: str) -> dict[str, Any] | None:
        if name.partition(":")[0] in ACTIONS and (name.partition(":")[0] == "promote") == (
                ":" in name):
            return lifecycle.setdefault(name, {"pubkeys": [], "threshold": 1})  # type: ignore[no-any-return]
        return None

    for step, key in functionaries:
        target = steps.get(step) or slot(step)
        if target is None:
            raise UsageError(f"the template has no step {step!r}",
                             hint="its steps: " + ", ".join(steps) + "; lifecycle "
                             "transitions: promote:STAGE, deprecate, retire, correct")
        d = key_dict(key)
        kid = by_identity.setdefault(key_identity(d), key.keyid)
        keys.setdefault(kid, d if kid == key.keyid else keys[kid])
        if names and names.get(key.keyid):
            known.setdefault(kid, names[key.keyid])
        if kid not in target["pubkeys"]:
            target["pubkeys"].append(kid)
    if known and isinstance(ext, dict):
        ext["functionaries"] = known
    for step, n in (thresholds or {}).items():
        target = steps.get(step) or (lifecycle.get(step) if step in lifecycle else None)
        if target is None:
            raise UsageError(f"threshold for unknown step {step!r}")
        target["threshold"] = int(n)
    for name in [n for n, t in lifecycle.items() if not t.get("pubkeys")]:
        del lifecycle[name]  # a transition nobody may sign is not offered
    if isinstance(ext, dict) and not lifecycle:
        ext.pop("lifecycle", None)
    for s in [*steps.values(), *({"name": n, **t} for n, t in lifecycle.items())]:
        if len(s["pubkeys"]) < int(s.get("threshold", 1)):
            raise UsageError(
                f"step {s['name']!r} needs {s.get('threshold', 1)} functionary key(s), "
                f"{len(s['pubkeys'])} given",
                hint=f"add --functionary {s['name']}=KEY")
    doc["keys"] = keys
    now = now or datetime.now(UTC)
    if expires is not None and expires <= now:
        raise UsageError(f"the layout would expire at {iso(expires)}, which is not in the "
                         "future", hint="give a positive validity, e.g. --expires 90d")
    doc["expires"] = iso(expires or now + DEFAULT_VALIDITY)
    if readme is not None:
        doc["readme"] = readme
    to_in_toto(doc)  # in-toto's validation
    return doc


def to_in_toto(doc: Mapping[str, Any]) -> Layout:
    """in-toto's Layout object for a layout document (validated by in-toto)."""
    from in_toto.models.layout import Layout
    from securesystemslib.exceptions import FormatError

    register_sigstore_keys()
    if doc.get("_type") != "layout":
        raise InputError(f"not an in-toto layout: _type is {doc.get('_type')!r}")
    data = {k: copy.deepcopy(v) for k, v in doc.items() if k != EXTENSION}
    try:
        return Layout.read(data)
    except (FormatError, KeyError, TypeError, ValueError) as e:
        raise InputError(f"invalid in-toto layout: {e}") from e


# ---------------------------------------------------------------------------------------------
# signing and loading


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign_layout(doc_or_signed: Mapping[str, Any], signer: Signer) -> dict[str, Any]:
    """Sign a layout document (or add a signature to a signed one): the DSSE envelope dict."""
    from modelseal.attest.dsse import Envelope

    if "payload" in doc_or_signed:
        env = Envelope.from_dict(dict(doc_or_signed), what="the layout envelope")
        try:
            doc = json.loads(env.payload)
        except ValueError as e:
            raise InputError(f"the layout envelope cannot be read: {e}") from e
    else:
        doc = payload_of(doc_or_signed) if "signed" in doc_or_signed else dict(doc_or_signed)
        env = Envelope(_canonical(doc), IN_TOTO_PAYLOAD_TYPE)
    if not isinstance(doc, dict):
        raise InputError("the layout is not a JSON object")
    to_in_toto(doc)
    # what ``layout check`` rejects is never signed: a signature is the owner's approval
    errors = [f for f in check_layout(doc).findings if f.level == "error"]
    if errors:
        raise UsageError("the layout has errors and was not signed: "
                         + "; ".join(f"[{f.code}] {f.message}" for f in errors),
                         hint="run `modelseal layout check` and fix them")
    env.sign(signer, what="layout")
    return env.to_dict()


def payload_of(signed: Mapping[str, Any]) -> dict[str, Any]:
    """The layout document inside a signed layout, NOT verified (for checks and display)."""
    import base64

    if "payload" in signed:
        from modelseal._util.json import loads as load_json

        try:
            doc = load_json(base64.b64decode(str(signed["payload"])),
                            what="the layout envelope's payload")
        except ValueError as e:  # base64
            raise InputError(f"the layout envelope's payload is not JSON: {e}") from e
    elif "signed" in signed:
        doc = signed["signed"]
    else:
        doc = dict(signed)
    if not isinstance(doc, dict):
        raise InputError("the layout is not a JSON object")
    return doc


def read_layout_file(path: str | Path) -> dict[str, Any]:
    """A layout file (signed or not) as JSON."""
    try:
        doc = json.loads(Path(path).read_bytes())
    except FileNotFoundError as e:
        raise UsageError(f"layout {path}: no such file") from e
    except (OSError, ValueError) as e:
        raise InputError(f"layout {path} cannot be read: {e}") from e
    if not isinstance(doc, dict):
        raise InputError(f"layout {path} is not a JSON object")
    return doc


@dataclass
class TrustedLayout:
    """A layout whose signatures verified against the policy's keys."""

    doc: dict[str, Any]  # the signed document, extension included
    layout: Layout
    signed_by: list[str]
    digest: str  # sha256 of the signed layout file's bytes

    @property
    def extension(self) -> dict[str, Any]:
        ext = self.doc.get(EXTENSION)
        return ext if isinstance(ext, dict) else {}

    @property
    def final_step(self) -> str:
        name = self.extension.get("final_step")
        if isinstance(name, str) and name:
            return name
        return str(self.layout.steps[-1].name) if self.layout.steps else ""

    def step_predicates(self, step: str) -> tuple[str, ...]:
        sp = self.extension.get("step_predicates")
        if isinstance(sp, dict) and isinstance(sp.get(step), list):
            return tuple(str(p) for p in sp[step])
        return (LINK_PREDICATE,)

    @property
    def separation_of_duties(self) -> list[tuple[str, str]]:
        return _pairs(self.extension.get("separation_of_duties"))

    def return_values(self, step: str) -> tuple[int, ...]:
        """Return values of a link's command that count as the step done (default 0)."""
        rv = self.extension.get("return_values")
        vals = rv.get(step) if isinstance(rv, dict) else None
        if isinstance(vals, list) and vals and all(
                isinstance(v, int) and not isinstance(v, bool) for v in vals):
            return tuple(vals)
        return (0,)

    @property
    def identities(self) -> dict[str, str]:
        """keyid -> key identity (``key_identity``) for every key of the layout."""
        return {str(k): key_identity(d) for k, d in (self.layout.keys or {}).items()}

    def step_identities(self, step: str) -> set[str]:
        """The identities (key material) authorized for ``step``."""
        ids = self.identities
        for s in self.layout.steps:
            if s.name == step:
                return {ids.get(str(k), f"unknown:{k}") for k in s.pubkeys}
        return set()

    def describe(self) -> dict[str, str]:
        """identity -> how to name it for people: the functionary's name and key id."""
        names = functionary_names(self.doc)
        out: dict[str, str] = {}
        keys = self.layout.keys or {}
        # a named key id first, so that a name given to one spelling of a key is used
        for kid in sorted(keys, key=lambda k: (k not in names, k)):
            out.setdefault(key_identity(keys[kid]), describe_key(kid, keys[kid], names.get(kid)))
        return out


def _pairs(raw: Any) -> list[tuple[str, str]]:
    out = []
    for p in raw or []:
        if isinstance(p, (list, tuple)) and len(p) == 2:
            out.append((str(p[0]), str(p[1])))
    return out


def unsigned_reason(raw: Any) -> str | None:
    """Why ``raw`` is not a signed layout (no envelope, no signature), or None."""
    if not isinstance(raw, dict):
        return "the layout file is not a JSON object"
    if raw.get("_type") == "layout":
        return ("the layout is not signed (a bare layout document): sign it with "
                "`modelseal layout sign`")
    if "payload" not in raw and "signed" not in raw:
        return "the file is neither a DSSE envelope nor a Metablock"
    sigs = raw.get("signatures")
    if not isinstance(sigs, list) or not sigs:
        return "the layout carries no signature"
    return None


def verify_layout(data: bytes, keys: Mapping[str, Key]) -> TrustedLayout:
    """Check a signed layout's signatures: every key given must have signed (in-toto's rule).

    Raises VerificationError naming the key that did not sign or the format problem."""
    import hashlib

    from in_toto.exceptions import InvalidMetadata, SignatureVerificationError
    from in_toto.models.metadata import Metadata
    from in_toto.verifylib import verify_metadata_signatures
    from securesystemslib.exceptions import FormatError

    register_sigstore_keys()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    try:
        raw = json.loads(data)
    except ValueError as e:
        raise VerificationError(f"the layout is not JSON: {e}") from e
    why = unsigned_reason(raw)
    if why:
        raise VerificationError(f"layout signature: {why}", reasons=[f"layout signature: {why}"])
    try:
        metadata = Metadata.from_dict(copy.deepcopy(raw))
    except (ValueError, InvalidMetadata, FormatError, KeyError, TypeError) as e:
        why = ("the layout is not signed in-toto metadata (DSSE envelope or Metablock): "
               + (str(e) or f"{type(e).__name__} (its payload type, payload or signatures "
                  "are not what in-toto reads)"))
        raise VerificationError(why, reasons=[why]) from e
    if not keys:
        raise VerificationError("no key is trusted to sign the layout",
                                hint="list the layout owner's public keys in the policy")
    signed_keyids = sorted({str(s.get("keyid")) for s in raw.get("signatures") or []
                            if isinstance(s, dict)})
    for kid, key in keys.items():
        try:
            verify_metadata_signatures(metadata, {kid: key_dict(key)})
        except (SignatureVerificationError, FormatError, ValueError) as e:
            present = ", ".join(k[:16] for k in signed_keyids) or "none"
            raise VerificationError(
                f"layout signature: the trusted layout key {kid[:16]} did not sign this layout "
                f"(signatures present: {present}): {e or type(e).__name__}",
                reasons=[f"layout signature: trusted key {kid[:16]} did not sign the layout "
                         f"(signed by: {present})"]) from e
    if isinstance(metadata, Metadata) and "payload" in raw:
        doc = json.loads(metadata.payload)
    else:
        doc = raw["signed"]
    if not isinstance(doc, dict) or doc.get("_type") != "layout":
        raise VerificationError("the signed document is not an in-toto layout")
    try:
        layout = to_in_toto(doc)
    except InputError as e:
        raise VerificationError(str(e)) from e
    return TrustedLayout(doc, layout, sorted(keys), digest)


# ---------------------------------------------------------------------------------------------
# checks


@dataclass(frozen=True)
class Finding:
    """One problem ``layout check`` found. ``error`` findings make the check fail."""

    level: str  # "error" | "warning"
    code: str
    message: str
    step: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "code": self.code, "message": self.message,
                "step": self.step}


@dataclass
class CheckReport:
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.level == "error" for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
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
        add(Finding("error", "invalid", str(e)))
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
                    add(Finding("error", "bad-rule", f"step {name}: {kind} rule {rule}: {e}",
                                name))
                    continue
                if r["rule_type"] != "match":
                    continue
                if r["dest_name"] != name:
                    consumed_from.add(str(r["dest_name"]))
                later = rules[i + 1:]
                if not any(isinstance(x, list) and x and str(x[0]).upper() == "DISALLOW"
                           for x in later):
                    add(Finding("error", "match-without-disallow",
                                f"step {name}: {kind} rule {' '.join(map(str, rule))} is not "
                                "followed by a DISALLOW rule: in-toto lets an artifact that "
                                "fails this MATCH pass silently (add DISALLOW *)", name))

    # expiry
    exp_raw = doc.get("expires")
    try:
        exp = parse_time(str(exp_raw))
        if exp <= now:
            add(Finding("error", "expired", f"the layout expired on {iso(exp)}"))
        elif exp - now < soon:
            days = (exp - now).days
            add(Finding("warning", "expires-soon",
                        f"the layout expires on {iso(exp)} (in {days} days): sign a new one"))
    except InputError:
        add(Finding("error", "invalid-expires", f"expires {exp_raw!r} is not a date"))

    # keys: one functionary per key material (key_identity), whatever the key ids say
    ident = {str(kid): key_identity(d) for kid, d in keys.items() if isinstance(d, Mapping)}
    names = functionary_names(doc)
    by_material: dict[str, list[str]] = {}
    for kid, mat in ident.items():
        by_material.setdefault(mat, []).append(kid)
    for kids in sorted(by_material.values()):
        if len(kids) > 1:
            add(Finding("error", "duplicate-key",
                        "the same key material is listed under "
                        f"{len(kids)} key ids ({', '.join(k[:16] for k in sorted(kids))}): it "
                        "is one functionary, and counts once towards thresholds and "
                        "separation of duties; list it once"))
    named: dict[str, set[str]] = {}
    for kid, n in names.items():
        named.setdefault(n, set()).add(ident.get(kid, kid))
    for n, ids in sorted(named.items()):
        if len(ids) > 1:
            add(Finding("warning", "ambiguous-name",
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
            add(Finding("error", "bad-threshold", f"step {name}: threshold {threshold!r} "
                        "must be a positive integer", name))
        elif threshold > distinct:
            add(Finding("error", "threshold-above-keys",
                        f"step {name}: threshold {threshold} but only {distinct} distinct "
                        "functionary key(s): the step can never pass", name))
        for kid in pubkeys:
            if kid not in keys:
                add(Finding("error", "unknown-key",
                            f"step {name}: key {str(kid)[:16]} is not in the layout's keys",
                            name))
    step_names = {str(s.get("name")) for s in steps}
    rv = ext.get("return_values")
    if rv is not None:
        if not isinstance(rv, dict) or not all(
                isinstance(v, list) and v and all(isinstance(x, int) and not isinstance(x, bool)
                                                  for x in v) for v in rv.values()):
            add(Finding("error", "bad-return-values", "modelseal.return_values maps a step "
                        "to the list of return values that count as done, e.g. {\"test\": [0]}"))
        else:
            for st in sorted(set(map(str, rv)) - step_names):
                add(Finding("error", "unknown-step", f"return values for step {st}, which "
                            "the layout does not have", st))
    fin = ext.get("final_step")
    if fin is not None and str(fin) not in step_names:
        add(Finding("error", "unknown-step", f"final step {fin}: the layout has no such step"))

    # separation of duties
    pairs = list(dict.fromkeys([*_pairs(ext.get("separation_of_duties")), *separate]))
    by_name = {str(s.get("name")): s for s in steps}
    for a, b in pairs:
        if a not in by_name or b not in by_name:
            missing = a if a not in by_name else b
            # a rule about a step that does not exist would hold vacuously: an error
            add(Finding("error", "unknown-step",
                        f"separation of duties {a}/{b}: the layout has no step {missing}"))
            continue
        shared = (material(by_name[a].get("pubkeys") or [])
                  & material(by_name[b].get("pubkeys") or []))
        for mat in sorted(shared):
            kid = sorted(by_material.get(mat, [mat]))[0]
            add(Finding("error", "separation-of-duties",
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
        add(Finding("error", "unconsumed-products",
                    f"step {name}: its products are consumed by no other step (no MATCH ... "
                    f"FROM {name}), so nothing ties them to the final product", name))
    return rep
