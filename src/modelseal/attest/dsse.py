"""DSSE (Dead Simple Signing Envelope): the one place modelseal signs and checks envelopes.

A DSSE signature is over the pre-authentication encoding ``PAE(payloadType, payload)``, never
over the payload alone, so a signature cannot be replayed under another payload type. The same
envelope JSON (payload and signatures in base64) is a Sigstore bundle's ``dsseEnvelope`` and a
signed in-toto layout, as securesystemslib and in-toto read it.

Keyless (Sigstore) signatures are made by sigstore itself, which builds the same PAE.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelseal._util.limits import MAX_SIGNATURES_PER_ENVELOPE
from modelseal.errors import InputError, SigningError

if TYPE_CHECKING:
    from securesystemslib.signer import Key, Signer

def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: ``DSSEv1 SP len(type) SP type SP len(body) SP body``."""
    t = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(payload), payload)


def b64decode(value: Any, what: str) -> bytes:
    """Standard base64 (or, as some producers write it, URL-safe base64 without padding)."""
    if not isinstance(value, str):
        raise InputError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        try:
            return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError) as e:
            raise InputError(f"{what} is not valid base64") from e


def b64encode(data: bytes) -> str:
    """Standard base64, as DSSE writes payloads and signatures."""
    return base64.b64encode(data).decode()


@dataclass(frozen=True, slots=True)
class DsseSignature:
    """One signature of an envelope: the signer's keyid (may be empty) and the raw bytes."""

    keyid: str
    sig: bytes
    unrecognized: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, what: str = "DSSE signature") -> DsseSignature:
        """Read ``{"sig", "keyid"}``; InputError when malformed."""
        if not isinstance(data, dict):
            raise InputError(f"malformed {what}")
        d = dict(data)
        keyid = d.pop("keyid", None)
        if keyid is not None and not isinstance(keyid, str):
            raise InputError(f"{what}: keyid is not a string")
        sig = b64decode(d.pop("sig", None), f"{what}: sig")
        return cls(keyid or "", sig, d)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (in the protobuf-specs field order, as Sigstore writes it)."""
        d: dict[str, Any] = {"sig": b64encode(self.sig), "keyid": self.keyid}
        d.update(self.unrecognized)
        return d


def sign(signer: Signer, payload_type: str, payload: bytes, *, what: str = "payload"
         ) -> DsseSignature:
    """Sign ``PAE(payload_type, payload)`` with a securesystemslib signer (keyed signers only:
    a keyless signer signs a whole bundle, see :func:`modelseal.attest.bundle.sign_statement`).
    """
    from modelseal.attest.signers import is_keyless, sign_bytes, signer_description

    if is_keyless(signer):
        raise SigningError(f"the {what} cannot be signed keylessly "
                           f"({signer_description(signer)}): sign it with a key")
    signature = sign_bytes(signer, pae(payload_type, payload), what=what)
    try:
        sig = bytes.fromhex(signature.signature)
    except ValueError as e:  # securesystemslib's key signers return hex
        raise SigningError(f"signing the {what} with {signer_description(signer)} gave no "
                           "hex signature") from e
    return DsseSignature(str(signer.public_key.keyid), sig)


def verify(key: Key, payload_type: str, payload: bytes, sig: bytes) -> bool:
    """Whether ``sig`` is ``key``'s signature over ``PAE(payload_type, payload)``."""
    from securesystemslib.exceptions import UnverifiedSignatureError
    from securesystemslib.exceptions import VerificationError as SslibVerificationError

    from modelseal.attest.signers import sslib_signer

    try:
        key.verify_signature(sslib_signer().Signature(key.keyid, sig.hex()),
                             pae(payload_type, payload))
    except (UnverifiedSignatureError, SslibVerificationError):
        return False
    return True


@dataclass(slots=True)
class Envelope:
    """A DSSE envelope: payload, its type, and the signatures over their PAE."""

    payload: bytes
    payload_type: str
    signatures: list[DsseSignature] = field(default_factory=list)
    unrecognized: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, *, what: str = "DSSE envelope") -> Envelope:
        """Read an envelope; InputError names what is wrong. More than
        ``MAX_SIGNATURES_PER_ENVELOPE`` signatures are refused before any is decoded."""
        if not isinstance(data, dict):
            raise InputError(f"{what} is not a JSON object")
        d = dict(data)
        payload_type = d.pop("payloadType", None)
        if not isinstance(payload_type, str):
            raise InputError(f"{what}: payloadType missing")
        payload = b64decode(d.pop("payload", None), f"{what}: payload")
        raw_sigs = d.pop("signatures", None)
        if not isinstance(raw_sigs, list):
            raise InputError(f"{what}: signatures is not a list")
        if len(raw_sigs) > MAX_SIGNATURES_PER_ENVELOPE:
            # refused before any is decoded or checked: the work per envelope is bounded
            raise InputError(f"{what} carries {len(raw_sigs)} signatures, more than the "
                             f"{MAX_SIGNATURES_PER_ENVELOPE} modelseal checks")
        sigs = [DsseSignature.from_dict(s, f"{what}: signature") for s in raw_sigs]
        return cls(payload, payload_type, sigs, d)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: ``payload`` (base64), ``payloadType``, ``signatures``."""
        d: dict[str, Any] = {"payload": b64encode(self.payload),
                             "payloadType": self.payload_type,
                             "signatures": [s.to_dict() for s in self.signatures]}
        d.update(self.unrecognized)
        return d

    def pae(self) -> bytes:
        """What the signatures sign."""
        return pae(self.payload_type, self.payload)

    def sign(self, signer: Signer, *, what: str = "payload") -> DsseSignature:
        """Add ``signer``'s signature, replacing an earlier one by the same keyid."""
        new = sign(signer, self.payload_type, self.payload, what=what)
        keyids = [s.keyid for s in self.signatures]
        if new.keyid in keyids:  # in place, as securesystemslib's Envelope re-signs
            self.signatures[keyids.index(new.keyid)] = new
        else:
            self.signatures.append(new)
        return new

    def verify(self, key: Key) -> bool:
        """Whether any of the envelope's signatures is ``key``'s."""
        return any(verify(key, self.payload_type, self.payload, s.sig) for s in self.signatures)
