"""Trusted time: RFC 3161 timestamps over DSSE signatures, as Sigstore bundles carry them.

A keyed attestation's ``created`` annotation is unsigned and its predicate's times are only
what the signer claims. A Time-Stamp Authority (TSA) countersigns the *signature bytes* (what
Sigstore timestamps too), and the DER ``TimeStampResp`` goes into the bundle at
``verificationMaterial.timestampVerificationData.rfc3161Timestamps[].signedTimestamp``
(protobuf-specs ``dev.sigstore.bundle.v1.TimestampVerificationData``). Adding a timestamp does
not change the DSSE envelope, so the bundle still verifies as before.

- ``TSAClient(url).timestamp(signature)``: ask a TSA (HTTP POST ``application/timestamp-query``),
  check the answer (granted, our nonce, our message imprint) and return its DER bytes;
- ``add_timestamp(bundle_json, client)``: the bundle with the TSA's countersignature added;
- ``verified_times(bundle, roots)``: the times of the bundle's timestamps that verify under
  the TSA certificates a policy trusts, and why the others do not. Offline, no clock.

Requests use ``rfc3161-client`` (the library sigstore-python uses) for ASN.1 and CMS.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelseal._util.time import rfc3339
from modelseal.errors import InputError, SigningError, UsageError
from modelseal.formats import TSA_QUERY_MEDIA_TYPE, TSA_REPLY_MEDIA_TYPE

if TYPE_CHECKING:
    from cryptography.x509 import Certificate

TSA_ENV = "MODELSEAL_TSA"
MAX_REPLY_BYTES = 1 << 20
MAX_TIMESTAMPS = 8  # per bundle: a hostile bundle cannot make us verify thousands


def tsa_url(option: str | None) -> str | None:
    """The TSA URL from ``--tsa`` or ``$MODELSEAL_TSA`` (option wins); None for no timestamp."""
    url = option or os.environ.get(TSA_ENV) or None
    if url is not None and not url.startswith(("http://", "https://")):
        raise UsageError(f"--tsa {url!r}: a Time-Stamp Authority URL is http(s)://...")
    return url


_ambient: list[TSAClient] = []  # set by ``timestamping``: the CLI's --tsa for one command


@contextmanager
def timestamping(client: TSAClient | None) -> Iterator[None]:
    """Within this block, every keyed signature ``sign_statement`` makes is countersigned by
    ``client`` (when not None) unless the caller passes its own ``tsa``. The CLI's ``--tsa``
    sets it once for a command, so every signing path of that command is timestamped."""
    if client is None:
        yield
        return
    _ambient.append(client)
    try:
        yield
    finally:
        _ambient.remove(client)


def ambient_tsa() -> TSAClient | None:
    """The TSA of the innermost ``timestamping`` block, if any."""
    return _ambient[-1] if _ambient else None


@dataclass(frozen=True)
class TSAClient:
    """An RFC 3161 Time-Stamp Authority reached over HTTP(S)."""

    url: str
    timeout: float = 15.0
    ca_file: str | None = None  # CA bundle for an https TSA with a private certificate

    def timestamp(self, data: bytes) -> bytes:
        """A DER ``TimeStampResp`` over ``sha256(data)``, checked against our request."""
        import requests
        from rfc3161_client import (
            HashAlgorithm,
            PKIStatus,
            TimestampRequestBuilder,
            decode_timestamp_response,
        )

        req = TimestampRequestBuilder().data(data).hash_algorithm(HashAlgorithm.SHA256).nonce(
            nonce=True).cert_request(cert_request=True).build()
        try:
            r = requests.post(self.url, data=req.as_bytes(), timeout=self.timeout,
                              headers={"Content-Type": TSA_QUERY_MEDIA_TYPE,
                                       "Accept": TSA_REPLY_MEDIA_TYPE},
                              verify=self.ca_file or True, stream=True)
            try:
                body = r.raw.read(MAX_REPLY_BYTES + 1, decode_content=True)
            finally:
                r.close()
        except requests.RequestException as e:
            raise SigningError(f"Time-Stamp Authority {self.url} cannot be reached: {e}",
                               hint="check --tsa / MODELSEAL_TSA") from e
        if r.status_code != 200:
            raise SigningError(f"Time-Stamp Authority {self.url} answered HTTP {r.status_code}")
        if len(body) > MAX_REPLY_BYTES:
            raise SigningError(f"Time-Stamp Authority {self.url} sent more than "
                               f"{MAX_REPLY_BYTES} bytes")
        try:
            resp = decode_timestamp_response(body)
        except Exception as e:  # the library raises ValueError or its own errors
            raise SigningError(f"Time-Stamp Authority {self.url} sent no RFC 3161 "
                               f"response: {e}") from e
        if PKIStatus(resp.status) != PKIStatus.GRANTED:
            raise SigningError(f"Time-Stamp Authority {self.url} refused: status "
                               f"{resp.status} {' '.join(resp.status_string)}")
        info = resp.tst_info
        if info.nonce != req.nonce:
            raise SigningError(f"Time-Stamp Authority {self.url} answered another request "
                               "(nonce mismatch)")
        if info.message_imprint.message != hashlib.sha256(data).digest():
            raise SigningError(f"Time-Stamp Authority {self.url} timestamped other data "
                               "(message imprint mismatch)")
        return bytes(resp.as_bytes())


# ---------------------------------------------------------------------------------------------
# bundles


def _signatures(raw: Mapping[str, Any]) -> list[bytes]:
    from modelseal.attest.dsse import Envelope

    try:
        return [s.sig for s in Envelope.from_dict(raw.get("dsseEnvelope")).signatures]
    except InputError:
        return []


def add_timestamp(bundle: bytes, client: TSAClient) -> bytes:
    """``bundle`` (Sigstore bundle JSON with a DSSE envelope) with an RFC 3161 timestamp over
    its (first) signature added to ``timestampVerificationData``."""
    import json

    raw = json.loads(bundle)
    sigs = _signatures(raw)
    if not sigs:
        raise SigningError("cannot timestamp a bundle without a DSSE signature")
    der = client.timestamp(sigs[0])
    vm = raw.setdefault("verificationMaterial", {})
    tvd = vm.setdefault("timestampVerificationData", {})
    tvd.setdefault("rfc3161Timestamps", []).append(
        {"signedTimestamp": base64.b64encode(der).decode()})
    return json.dumps(raw, separators=(",", ":")).encode()


def timestamps_of(raw: Mapping[str, Any]) -> list[bytes]:
    """The DER timestamps a parsed bundle carries (unverified), at most ``MAX_TIMESTAMPS``."""
    vm = raw.get("verificationMaterial")
    tvd = vm.get("timestampVerificationData") if isinstance(vm, Mapping) else None
    items = tvd.get("rfc3161Timestamps") if isinstance(tvd, Mapping) else None
    out = []
    for t in (items if isinstance(items, list) else [])[:MAX_TIMESTAMPS]:
        if isinstance(t, Mapping) and isinstance(t.get("signedTimestamp"), str):
            try:
                out.append(base64.b64decode(t["signedTimestamp"], validate=True))
            except (binascii.Error, ValueError):
                out.append(b"")
    return out


# ---------------------------------------------------------------------------------------------
# verification


@dataclass(frozen=True)
class TrustedTime:
    """A time a trusted TSA countersigned; ``tsa`` names its certificate's subject."""

    time: datetime
    tsa: str
    serial: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"time": rfc3339(self.time),
                "source": "rfc3161", "tsa": self.tsa, "serial": self.serial}


@dataclass
class TimestampCheck:
    """What a bundle's timestamps proved: verified times, and why the others were refused."""

    times: list[TrustedTime] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    @property
    def earliest(self) -> TrustedTime | None:
        return min(self.times, key=lambda t: t.time) if self.times else None


def load_tsa_certificates(paths: Sequence[str | Path]) -> list[Certificate]:
    """TSA certificates (PEM, one or more per file) a policy trusts: roots or the TSA's own."""
    from cryptography import x509

    out: list[Certificate] = []
    for p in paths:
        try:
            data = Path(p).read_bytes()
        except OSError as e:
            raise UsageError(f"TSA certificate {p} cannot be read: {e.strerror or e}") from e
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError:
            try:
                certs = [x509.load_der_x509_certificate(data)]
            except ValueError as e:
                raise InputError(f"TSA certificate {p} is neither PEM nor DER") from e
        out.extend(certs)
    return out


def verify_timestamp(der: bytes, signature: bytes, roots: Sequence[Certificate]) -> TrustedTime:
    """Verify one DER ``TimeStampResp`` over ``signature`` under trusted ``roots``.

    Raises InputError with the reason. The TSA's certificate must chain to a root, carry the
    critical timeStamping EKU, and have been valid at the time it stamped."""
    from rfc3161_client import VerificationError as TsaVerificationError
    from rfc3161_client import VerifierBuilder, decode_timestamp_response

    if not roots:
        raise InputError("no TSA certificate is trusted")
    try:
        resp = decode_timestamp_response(der)
    except Exception as e:  # malformed DER from a hostile bundle
        raise InputError(f"not an RFC 3161 timestamp response: {e}") from e
    try:
        # all trusted certificates at once, so a CA and its intermediate can chain
        VerifierBuilder(roots=list(roots)).build().verify_message(resp, signature)
    except (TsaVerificationError, ValueError) as e:
        raise InputError("the timestamp does not verify under the trusted TSA certificates: "
                         f"{e or type(e).__name__}") from e
    info = resp.tst_info
    gen = info.gen_time
    gen = gen.replace(tzinfo=UTC) if gen.tzinfo is None else gen.astimezone(UTC)
    return TrustedTime(gen, _tsa_name(resp), int(info.serial_number))


def _tsa_name(resp: Any) -> str:
    """The subject of the certificate that signed a (verified) timestamp response."""
    from cryptography import x509

    try:
        si = next(iter(resp.signed_data.signer_infos))
        for der in resp.signed_data.certificates:
            cert = x509.load_der_x509_certificate(der)
            if cert.issuer == si.issuer and cert.serial_number == si.serial_number:
                return str(cert.subject.rfc4514_string())
    except (StopIteration, ValueError):
        pass
    return "trusted TSA"


def verified_times(bundle_raw: Mapping[str, Any], roots: Sequence[Certificate]) -> TimestampCheck:
    """Check every RFC 3161 timestamp of a parsed bundle against its DSSE signature(s)."""
    out = TimestampCheck()
    ders = timestamps_of(bundle_raw)
    if not ders:
        return out
    sigs = _signatures(bundle_raw)
    for i, der in enumerate(ders):
        why = []
        for sig in sigs:
            try:
                out.times.append(verify_timestamp(der, sig, roots))
                break
            except InputError as e:
                why.append(e.message)
        else:
            out.refused.append(f"timestamp {i}: " + ("; ".join(dict.fromkeys(why))
                                                     or "the bundle has no signature"))
    return out


def verified_times_of_bundle(bundle: bytes, roots: Sequence[Certificate]) -> TimestampCheck:
    """``verified_times`` for bundle bytes; an unreadable bundle proves no time."""
    import json

    try:
        raw = json.loads(bundle)
    except (ValueError, UnicodeDecodeError):
        return TimestampCheck(refused=["not a JSON bundle"])
    if not isinstance(raw, dict):
        return TimestampCheck(refused=["not a JSON bundle"])
    return verified_times(raw, roots)
