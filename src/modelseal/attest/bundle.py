"""DSSE envelopes in Sigstore bundles v0.3: signing, parsing, verifying.

One format for keyed and keyless signatures (DESIGN.md section 2):

- keyless bundles are exactly what sigstore-python's ``sign_dsse`` produces (Fulcio
  certificate, transparency-log entry, timestamps);
- keyed bundles carry ``verificationMaterial.publicKey.hint`` = the securesystemslib keyid and
  no transparency-log entry. sigstore-python's ``Bundle.from_json`` insists on a certificate
  and one log entry, so it refuses them ("expected certificate in bundle"); the protobuf-specs
  model it wraps (``sigstore_models.bundle.v1.Bundle``) parses them, and so does cosign's
  ``--key`` verification of an offline bundle. modelseal verifies them itself: DSSE signature
  over PAE(payloadType, payload) with the named key.

Verification never touches the network: the Sigstore trusted root is passed in, or the
production root shipped inside the sigstore package is used.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelseal._util.json import canonical_json  # the bytes we sign, as we store JSON
from modelseal._util.json import loads_object as load_json_object
from modelseal._util.limits import MAX_BUNDLE_BYTES
from modelseal.attest.dsse import Envelope, b64decode
from modelseal.attest.dsse import verify as dsse_verify
from modelseal.attest.payload import Statement, check_statement
from modelseal.errors import InputError, SigningError, VerificationError
from modelseal.formats import BUNDLE_MEDIA_TYPE, BUNDLE_MEDIA_TYPES, IN_TOTO_PAYLOAD_TYPE

if TYPE_CHECKING:
    from securesystemslib.signer import Key, Signer

    from modelseal.attest.tsa import TSAClient

# Fulcio certificate extensions naming the OIDC issuer (v2 DER string, v1 raw bytes)
_OID_ISSUER_V2 = "1.3.6.1.4.1.57264.1.8"
_OID_ISSUER_V1 = "1.3.6.1.4.1.57264.1.1"
PRODUCTION_TUF_URL = "https://tuf-repo-cdn.sigstore.dev"
STAGING_TUF_URL = "https://tuf-repo-cdn.sigstage.dev"


@dataclass(frozen=True)
class KeylessIdentity:
    """A Sigstore identity trusted to sign: certificate SAN and OIDC issuer, matched exactly."""

    identity: str
    issuer: str

    def __str__(self) -> str:
        return f"{self.identity} (issuer {self.issuer})"


@dataclass
class ParsedBundle:
    """What a bundle says, unverified: for listing and for choosing how to verify."""

    media_type: str
    payload_type: str
    payload: bytes
    signatures: list[tuple[str, bytes]]  # (keyid, signature)
    hint: str | None
    certificate_der: bytes | None
    tlog_entries: int
    bundle_digest: str
    raw: dict[str, Any] = field(repr=False)
    # the payload parsed once (a link of 100,000 files is ~20 MB of JSON): [object, checked]
    _parsed: list[Any] = field(default_factory=list, repr=False, compare=False)

    @property
    def keyless(self) -> bool:
        return self.certificate_der is not None

    def _payload_object(self) -> dict[str, Any] | None:
        if self.payload_type != IN_TOTO_PAYLOAD_TYPE:
            return None
        if not self._parsed:
            try:
                obj: dict[str, Any] | None = load_json_object(
                    self.payload, what="DSSE payload", max_bytes=MAX_BUNDLE_BYTES)
            except InputError:
                obj = None
            self._parsed[:] = [obj, None]
        return self._parsed[0]  # type: ignore[no-any-return]

    @property
    def statement(self) -> dict[str, Any] | None:
        """The in-toto Statement, when the payload is one (not verified!)."""
        # Only a well-formed Statement: callers read its fields before any signature is
        # checked, so a malformed unsigned one must look like no Statement at all.
        obj = self._payload_object()
        if obj is None:
            return None
        if self._parsed[1] is None:  # checked once: the payload bytes never change
            try:
                check_statement(obj)
                self._parsed[1] = True
            except InputError:
                self._parsed[1] = False
        return obj if self._parsed[1] else None

    @property
    def parsed_statement(self) -> Statement | None:
        """:attr:`statement` as the typed :class:`~modelseal.attest.payload.Statement`."""
        obj = self._payload_object()
        try:
            return Statement.from_dict(obj)
        except InputError:
            return None

    @property
    def predicate_type(self) -> str | None:
        st = self.statement
        pt = st.get("predicateType") if st else None
        return pt if isinstance(pt, str) else None

    def certificate_identity(self) -> tuple[str | None, str | None]:
        """(SAN, OIDC issuer) written in the certificate, unverified."""
        if self.certificate_der is None:
            return None, None
        return _cert_identity(self.certificate_der)

    @property
    def signer_hint(self) -> str:
        """Who claims to have signed (keyid or identity), for listings. Not verified."""
        if self.keyless:
            ident, issuer = self.certificate_identity()
            return f"{ident}|{issuer}"
        # The DSSE keyid is the securesystemslib keyid; the hint may be another tool's
        # (model_signing puts a hash of the PEM there).
        if self.signatures and self.signatures[0][0]:
            return self.signatures[0][0]
        return self.hint or ""


@dataclass
class VerifiedStatement:
    """A Statement whose signature verified, and who signed it."""

    statement: dict[str, Any]
    predicate_type: str
    signer_id: str  # keyid for keyed signatures, "identity|issuer" for keyless
    keyid: str | None
    identity: str | None
    issuer: str | None
    bundle_digest: str

    @property
    def subjects(self) -> list[tuple[str, str]]:
        """(name, sha256 hex) of each subject that has a sha256 digest."""
        out = []
        for s in self.statement.get("subject", []):
            d = s.get("digest", {}).get("sha256")
            if d:
                out.append((str(s.get("name", "")), str(d)))
        return out


def _shown(value: Any) -> str:
    """A value from outside, cut short for a message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def sign_statement(statement: Mapping[str, Any], signer: Signer,
                   tsa: TSAClient | None = None) -> bytes:
    """Sign an in-toto Statement; the Sigstore bundle v0.3 (DSSE) as JSON bytes.

    With ``tsa`` (or inside ``attest.tsa.timestamping``), a keyed signature is countersigned by
    that RFC 3161 Time-Stamp Authority (``verificationMaterial.timestampVerificationData``).
    Keyless bundles already carry the transparency log's signed integration time and are
    left as sigstore made them."""
    from modelseal.attest.signers import is_keyless, signer_description

    check_statement(statement)
    payload = canonical_json(statement)
    if is_keyless(signer):
        if not statement.get("subject"):
            raise SigningError("Sigstore keyless signing needs a Statement with at least one"
                               " subject (sigstore refuses an empty subject list)")
        try:
            return signer.sign_dsse(payload)  # type: ignore[attr-defined, no-any-return]
        except Exception as e:
            raise SigningError(f"keyless signing as {signer_description(signer)} failed: "
                               f"{e or type(e).__name__}") from e
    envelope = Envelope(payload, IN_TOTO_PAYLOAD_TYPE)
    key_id = envelope.sign(signer, what="statement").keyid
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": key_id}, "tlogEntries": []},
        "dsseEnvelope": envelope.to_dict(),
    }
    out = json.dumps(bundle, separators=(",", ":")).encode()
    if tsa is None:
        from modelseal.attest.tsa import ambient_tsa

        tsa = ambient_tsa()
    if tsa is not None:
        from modelseal.attest.tsa import add_timestamp

        out = add_timestamp(out, tsa)
    return out


def parse_bundle(data: bytes) -> ParsedBundle:
    """Read a Sigstore bundle holding a DSSE envelope. Checks shape, not signatures."""
    if len(data) >= MAX_BUNDLE_BYTES:
        raise InputError(f"the bundle is {len(data)} bytes; modelseal reads bundles smaller "
                         f"than {MAX_BUNDLE_BYTES} (the verifier's bound for a model is "
                         "smaller still: _util.limits.attestation_bound)")
    raw = load_json_object(data, what="the Sigstore bundle", max_bytes=MAX_BUNDLE_BYTES)
    media_type = raw.get("mediaType")
    if media_type not in BUNDLE_MEDIA_TYPES:
        raise InputError(f"not a Sigstore bundle: mediaType {_shown(media_type)}")
    env = raw.get("dsseEnvelope")
    if not isinstance(env, dict):
        kind = "a message signature" if "messageSignature" in raw else "no DSSE envelope"
        raise InputError(f"the bundle holds {kind}, not a DSSE envelope with a Statement")
    envelope = Envelope.from_dict(env, what="bundle: the DSSE envelope")
    if not envelope.signatures:
        raise InputError("bundle: the DSSE envelope has no signatures")
    vm = raw.get("verificationMaterial")
    if not isinstance(vm, dict):
        raise InputError("bundle: verificationMaterial missing")
    hint = None
    pk = vm.get("publicKey")
    if isinstance(pk, dict) and isinstance(pk.get("hint"), str):
        hint = pk["hint"]
    cert_der = None
    if isinstance(vm.get("certificate"), dict):
        cert_der = b64decode(vm["certificate"].get("rawBytes"), "bundle: certificate")
    elif isinstance(vm.get("x509CertificateChain"), dict):
        certs = vm["x509CertificateChain"].get("certificates") or []
        if isinstance(certs, list) and certs and isinstance(certs[0], dict):
            cert_der = b64decode(certs[0].get("rawBytes"), "bundle: certificate")
    tlog = vm.get("tlogEntries")
    return ParsedBundle(
        media_type=str(media_type),
        payload_type=envelope.payload_type,
        payload=envelope.payload,
        signatures=[(sig.keyid, sig.sig) for sig in envelope.signatures],
        hint=hint,
        certificate_der=cert_der,
        tlog_entries=len(tlog) if isinstance(tlog, list) else 0,
        bundle_digest="sha256:" + hashlib.sha256(data).hexdigest(),
        raw=raw,
    )


def _cert_identity(der: bytes) -> tuple[str | None, str | None]:
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
        return _identity_of(cert)
    except ValueError:  # malformed certificate or extensions (e.g. one listed twice)
        return None, None


def _identity_of(cert: Any) -> tuple[str | None, str | None]:
    from cryptography import x509

    ident: str | None = None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = (san.get_values_for_type(x509.RFC822Name)
                 + san.get_values_for_type(x509.UniformResourceIdentifier))
        ident = names[0] if names else None
    except x509.ExtensionNotFound:
        pass
    issuer: str | None = None
    for ext in cert.extensions:
        oid = ext.oid.dotted_string
        if oid in (_OID_ISSUER_V2, _OID_ISSUER_V1) and isinstance(ext.value,
                                                                  x509.UnrecognizedExtension):
            val = ext.value.value
            if oid == _OID_ISSUER_V2 and len(val) > 2 and val[0] == 0x0C:  # DER UTF8String
                n = val[1]
                start = 2
                if n & 0x80:  # long form length
                    k = n & 0x7F
                    n = int.from_bytes(val[2:2 + k], "big")
                    start = 2 + k
                issuer = val[start:start + n].decode(errors="replace")
                break
            if oid == _OID_ISSUER_V1:
                issuer = val.decode(errors="replace")
    return ident, issuer


def load_trusted_root(spec: str | None = None) -> Any:
    """A sigstore TrustedRoot, offline: ``production`` (default) or ``staging`` as shipped in
    the sigstore package, or the path of a trusted_root.json."""
    from importlib import resources
    from urllib.parse import quote

    from sigstore.models import TrustedRoot

    name = spec or "production"
    try:
        if name in ("production", "staging"):
            url = PRODUCTION_TUF_URL if name == "production" else STAGING_TUF_URL
            # the root embedded in the sigstore distribution: pinned, no TUF refresh
            data = (resources.files("sigstore._store") / quote(url, safe="")
                    / "trusted_root.json").read_bytes()
            from sigstore_models.trustroot.v1 import TrustedRoot as _Inner

            return TrustedRoot(_Inner.from_json(data))
        return TrustedRoot.from_file(name)
    except OSError as e:
        raise VerificationError(f"cannot read Sigstore trusted root {name}: "
                                f"{e.strerror or e}") from e
    except Exception as e:
        raise VerificationError(f"cannot load Sigstore trusted root {name}: {e}") from e


def _statement_of(payload_type: str, payload: bytes) -> dict[str, Any]:
    if payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise VerificationError(f"the DSSE payload type is {payload_type!r}, "
                                f"not an in-toto Statement ({IN_TOTO_PAYLOAD_TYPE})")
    try:
        st = load_json_object(payload, what="the DSSE payload", max_bytes=MAX_BUNDLE_BYTES)
        check_statement(st)
    except InputError as e:
        raise VerificationError(f"the signed payload is not an in-toto Statement: {e}") from e
    if not isinstance(st, dict):
        raise VerificationError("the signed payload is not an in-toto Statement")
    return st


def _verify_keyed(pb: ParsedBundle, keys: Mapping[str, Key]) -> str:
    claimed = pb.hint or pb.signatures[0][0] or "(none)"
    if not keys:
        raise VerificationError(f"bundle signed by key {claimed}, and no key is trusted",
                                hint="pass the signer's public key")
    # the key named by the hint first, then any other given key
    wanted = [k for k in (pb.hint, *(s[0] for s in pb.signatures)) if k]
    order = [keys[k] for k in dict.fromkeys(wanted) if k in keys]
    order += [k for k in keys.values() if k not in order]
    for key in order:
        if any(dsse_verify(key, pb.payload_type, pb.payload, sig) for _, sig in pb.signatures):
            return str(key.keyid)
    trusted = ", ".join(sorted(k[:16] for k in keys))
    if pb.hint and pb.hint in keys:
        raise VerificationError(f"the signature of key {pb.hint} does not verify: the bundle "
                                "was altered or signed by another key")
    raise VerificationError(f"bundle signed by key {claimed}, which is not trusted "
                            f"(trusted: {trusted})")


def _verify_keyless(data: bytes, pb: ParsedBundle, keyless: Sequence[KeylessIdentity],
                    trusted_root: Any) -> tuple[str, str, bytes, str]:
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import Bundle
    from sigstore.verify import Verifier
    from sigstore.verify.policy import Identity

    ident, issuer = pb.certificate_identity()
    who = f"{ident} (issuer {issuer})"
    if not keyless:
        raise VerificationError(f"bundle signed keylessly by {who}, and no Sigstore identity "
                                "is trusted")
    if trusted_root is None:
        trusted_root = load_trusted_root("production")
    try:
        bundle = Bundle.from_json(data)
        verifier = Verifier(trusted_root=trusted_root)
    except Exception as e:
        raise VerificationError(f"keyless bundle cannot be read: {e}") from e
    reasons = []
    for want in keyless:
        if ident is not None and want.identity != ident:
            reasons.append(f"identity {ident} is not {want.identity}")
            continue
        if issuer is not None and want.issuer != issuer:
            reasons.append(f"issuer {issuer} is not {want.issuer}")
            continue
        try:
            ptype, payload = verifier.verify_dsse(
                bundle, Identity(identity=want.identity, issuer=want.issuer))
        except SigstoreError as e:
            reasons.append(f"{want}: {e} (certificate, log entry or timestamp not valid under "
                           "the trusted root)")
            continue
        return want.identity, want.issuer, payload, ptype
    raise VerificationError(f"keyless signature by {who} refused: " + "; ".join(reasons),
                            reasons=reasons)


def verify_bundle(
    data: bytes,
    *,
    keys: Mapping[str, Key] | None = None,
    keyless: Sequence[KeylessIdentity] = (),
    trusted_root: Any | None = None,
    parsed: ParsedBundle | None = None,
) -> VerifiedStatement:
    """Verify a DSSE bundle against trusted keys (by keyid) or Sigstore identities; offline.

    ``parsed`` is ``parse_bundle(data)`` when the caller already has it (a bundle of 20 MB is
    then read once, not twice). Raises VerificationError naming what failed: the key id,
    identity, issuer or trusted root.
    """
    if parsed is not None and parsed.bundle_digest != "sha256:" + hashlib.sha256(
            data).hexdigest():
        raise ValueError("verify_bundle: parsed is not parse_bundle(data)")
    try:
        pb = parsed if parsed is not None else parse_bundle(data)
    except InputError as e:
        raise VerificationError(str(e)) from e
    if pb.keyless:
        ident, issuer, payload, ptype = _verify_keyless(data, pb, keyless, trusted_root)
        # the signed payload is the one already parsed (unless sigstore saw other bytes)
        st = (pb.statement if (ptype, payload) == (pb.payload_type, pb.payload) else None) \
            or _statement_of(ptype, payload)
        return VerifiedStatement(statement=st, predicate_type=str(st["predicateType"]),
                                 signer_id=f"{ident}|{issuer}", keyid=None, identity=ident,
                                 issuer=issuer, bundle_digest=pb.bundle_digest)
    kid = _verify_keyed(pb, keys or {})
    # the verified bytes are pb.payload: its Statement parsed once; else the reason it is none
    st = pb.statement or _statement_of(pb.payload_type, pb.payload)
    return VerifiedStatement(statement=st, predicate_type=str(st["predicateType"]),
                             signer_id=kid, keyid=kid, identity=None, issuer=None,
                             bundle_digest=pb.bundle_digest)
