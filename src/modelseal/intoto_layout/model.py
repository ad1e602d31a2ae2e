"""in-toto layouts, the model: reading a layout document, its keys (``key_identity``: when
two keys are the same functionary), and verifying a signed layout's signatures.

A layout is the in-toto 3.x layout document (``_type: layout``), signed in a DSSE envelope
(payloadType ``application/vnd.in-toto+json``) exactly as ``in-toto-sign`` writes it, so
``in-toto-verify`` and other in-toto tools read our layouts. The classic Metablock format
(``{"signed": ..., "signatures": ...}``) is read too. Writing layouts (templates, ``layout
new``, signing) is ``intoto_layout.authoring``; ``layout check`` is ``intoto_layout.lint``.

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

Nothing here touches the network; reading files is limited to the helpers that say so
(``load_functionary_key``, ``read_layout_file``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelseal._util.json import canonical_json
from modelseal.errors import InputError, UsageError, VerificationError
from modelseal.formats import LINK_PREDICATE, SIGSTORE_KEYTYPE

if TYPE_CHECKING:
    from in_toto.models.layout import Layout
    from securesystemslib.signer import Key

EXTENSION = "modelseal"
SIGSTORE_SCHEME = "Fulcio"
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"


def register_sigstore_keys() -> None:
    """Let securesystemslib (and so in-toto) read ``sigstore-oidc`` keys in layouts.

    securesystemslib leaves this registration to the application."""
    from securesystemslib.signer import KEY_FOR_TYPE_AND_SCHEME, SigstoreKey

    KEY_FOR_TYPE_AND_SCHEME.setdefault((SIGSTORE_KEYTYPE, SIGSTORE_SCHEME), SigstoreKey)


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
    """Whether a layout ``keys`` entry stands for a Sigstore identity (keyless)."""
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
        return "unparsed:" + hashlib.sha256(canonical_json(dict(keyval))).hexdigest()
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
# the layout document



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
        return step_pairs(self.extension.get("separation_of_duties"))

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


def step_pairs(raw: Any) -> list[tuple[str, str]]:
    """The ``[step, step]`` pairs of an extension list (``separation_of_duties``); entries
    that are not pairs are ignored."""
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
