"""OpenSSF model signing (``model_signing`` 1.1.x) signatures, built from our own digests.

``model_signing sign key MODEL`` writes ``model.sig``: a Sigstore bundle v0.3 whose DSSE
envelope holds an in-toto Statement v1 with predicateType
``https://model_signing/signature/v1.0``:

- one subject: ``name`` = the model directory's base name (informative only),
  ``digest.sha256`` = sha256 over the concatenated *raw* file digests, in resource order;
- ``predicate.serialization`` = ``{"method": "files", "hash_type": "sha256",
  "allow_symlinks": false, "ignore_paths": [...]}``: what the verifier must skip;
- ``predicate.resources`` = ``[{"name": "<posix path>", "algorithm": "sha256",
  "digest": "<hex>"}]``, sorted as ``pathlib.PurePosixPath`` sorts (component by component).

``model_signing verify key --signature model.sig --public_key key.pub MODEL`` then checks the
ECDSA signature over DSSE's PAE (SHA-256 for P-256, SHA-384 for P-384, SHA-512 for P-521),
refuses a bundle whose ``verificationMaterial.publicKey.hint`` is present and differs from
sha256(SPKI PEM of the given key), checks the subject digest against the resources, re-hashes
the directory (minus the ignore paths, ``model.sig`` and git files) and requires exactly the
same set of (path, digest) pairs: no file missing, none extra.

Here we produce the same Statement from digests modelseal already has (no second read of the
model) and sign it with any modelseal signer. The subject digest above binds the file digests
but not their names; :func:`statement_dir_digest` gives the files a Statement signs their
modelseal directory digest (``modelseal.digest.DIR_DIGEST_SCHEME``, which binds every path),
the digest provenance and the ML-BOM record for the same directory, so a ``model.sig`` joins
them without reading the model. The one difference from modelseal's other
bundles is the key hint: sha256 of the PEM, as model_signing wants, instead of the
securesystemslib keyid (which stays in the DSSE signature's ``keyid``). The hint is outside
the signed payload, so changing it changes no signature.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from modelseal._util.fs import safe_relpath
from modelseal.attest.payload import ResourceDescriptor, Statement
from modelseal.attest.predicates import ModelSigning, ModelSigningResource
from modelseal.errors import InputError, SigningError
from modelseal.formats import MODEL_SIGNING_PREDICATE

if TYPE_CHECKING:
    from securesystemslib.signer import Key, Signer

SIGNATURE_FILE = "model.sig"
GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")
DEFAULT_IGNORE_PATHS: tuple[str, ...] = (SIGNATURE_FILE, *GIT_PATHS)
"""What ``model_signing sign key`` ignores by default (its ``--signature`` and git files)."""

SUPPORTED_CURVES = ("secp256r1", "secp384r1", "secp521r1")


def _sort_key(name: str) -> tuple[str, ...]:
    # model_signing sorts pathlib.PurePosixPath objects: component by component, so
    # "a/b" < "a-c" although "a-c" < "a/b" as strings.
    return tuple(name.split("/"))


def _ignored(name: str, ignore: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p.rstrip("/") + "/") for p in ignore)


def root_digest(sha256_hexes: Iterable[str]) -> str:
    """The subject digest: sha256 over the raw bytes of every file digest, in order (hex)."""
    h = hashlib.sha256()
    for d in sha256_hexes:
        h.update(bytes.fromhex(d))
    return h.hexdigest()


def model_signing_statement(
    files: Iterable[tuple[str, str]],
    *,
    model_name: str = "model",
    ignore_paths: Sequence[str] = DEFAULT_IGNORE_PATHS,
    allow_symlinks: bool = False,
) -> dict[str, Any]:
    """The in-toto Statement ``model_signing sign key`` would write for these files.

    ``files`` are (relative '/'-separated path, sha256 hex or ``sha256:hex``) pairs, e.g. from
    :func:`modelseal.digest.hash_files` or the manifest's layers. Files under ``ignore_paths``
    are left out, as model_signing leaves them out; the verifier skips the same paths.
    ``model_name`` is informative (model_signing uses the directory's base name).
    """
    ignore = [safe_relpath(p.rstrip("/"), "ignore path") for p in dict.fromkeys(ignore_paths)]
    seen: dict[str, str] = {}
    for name, digest in files:
        safe_relpath(name, "model file")
        hexd = digest.removeprefix("sha256:").lower()
        if len(hexd) != 64 or any(c not in "0123456789abcdef" for c in hexd):
            raise InputError(f"model file {name!r}: {digest!r} is not a sha256 digest")
        if name in seen:
            raise InputError(f"model file {name!r} is listed twice")
        if not _ignored(name, ignore):
            seen[name] = hexd
    names = sorted(seen, key=_sort_key)
    serialization: dict[str, Any] = {"method": "files", "hash_type": "sha256",
                                     "allow_symlinks": allow_symlinks}
    if ignore:
        serialization["ignore_paths"] = ignore
    predicate = ModelSigning(serialization,
                             [ModelSigningResource(n, "sha256", seen[n]) for n in names])
    return Statement([ResourceDescriptor(name=model_name or "model",
                                         digest={"sha256": root_digest(seen[n] for n in names)})],
                     MODEL_SIGNING_PREDICATE, predicate.to_dict()).to_dict()


def statement_files(statement: Mapping[str, Any] | Statement) -> dict[str, str]:
    """{path: sha256 hex} signed by a model_signing v1.0 Statement, after checking that the
    subject digest matches the resources (as ``model_signing verify`` does)."""
    st = statement if isinstance(statement, Statement) else Statement.from_dict(statement)
    if st.predicate_type != MODEL_SIGNING_PREDICATE:
        raise InputError(f"not a model_signing signature: predicateType {st.predicate_type!r}")
    pred = st.predicate_as(ModelSigning)
    ser = pred.serialization
    if ser.get("method") != "files" or ser.get("hash_type") != "sha256":
        raise InputError(f"model_signing serialization {ser.get('method')!r}/"
                         f"{ser.get('hash_type')!r} is not supported (only files/sha256)")
    if len(st.subject) != 1:
        raise InputError(f"model_signing Statement has {len(st.subject)} subjects, not 1")
    expected = st.subject[0].sha256
    if expected is None:
        raise InputError("model_signing Statement: its subject has no sha256 digest")
    out: dict[str, str] = {}
    order = []
    for r in pred.resources:
        if r.algorithm != "sha256":
            raise InputError(f"resource {r.name!r}: algorithm {r.algorithm!r}")
        name = safe_relpath(r.name, "model_signing resource")
        if name in out:
            raise InputError(f"model_signing resource {name!r} is listed twice")
        out[name] = r.digest.lower()
        order.append(out[name])
    try:
        got = root_digest(order)
    except ValueError as e:
        raise InputError(f"model_signing Statement holds a digest that is not hex: {e}") from e
    if got != expected:
        raise InputError(f"model_signing Statement is inconsistent: subject digest {expected} "
                         f"but the resources hash to {got}")
    return out


def statement_dir_digest(statement: Mapping[str, Any]) -> str:
    """The directory digest (``modelseal.digest.DIR_DIGEST_SCHEME``, hex) of the files a
    model_signing v1.0 Statement signs, after :func:`statement_files` checked it: equal to
    the digest provenance and the ML-BOM give the directory those files came from."""
    from modelseal.digest import dir_digest

    return dir_digest(statement_files(statement).items())


def key_hint(public_key_pem: bytes | str) -> str:
    """model_signing's ``publicKey.hint``: sha256 hex of the key's SPKI PEM (as cryptography
    writes it, so any PEM formatting of the same key gives the same hint)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    data = public_key_pem.encode() if isinstance(public_key_pem, str) else public_key_pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise InputError(f"not a PEM public key: {e}") from e
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in SUPPORTED_CURVES:
        kind = key.curve.name if isinstance(key, ec.EllipticCurvePublicKey) else type(key).__name__
        raise SigningError(
            f"model_signing verifies ECDSA keys on P-256, P-384 or P-521 only, not {kind}",
            hint="sign the model_signing attestation with an ECDSA key "
                 "(`modelseal keygen NAME` makes a P-256 key)")
    pem = key.public_bytes(serialization.Encoding.PEM,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


def signer_key_hint(key: Key) -> str:
    """:func:`key_hint` for a securesystemslib public key (file, HSM or KMS signer's key)."""
    if key.keytype != "ecdsa":
        raise SigningError(
            f"model_signing verifies ECDSA keys only; this signer's key is {key.keytype} "
            f"({key.scheme})",
            hint="sign the model_signing attestation with an ECDSA P-256/P-384 key")
    pem = key.keyval.get("public")
    if not isinstance(pem, str):
        raise SigningError("the signer's public key has no PEM value")
    return key_hint(pem)


def with_key_hint(bundle: bytes, hint: str) -> bytes:
    """The same bundle with ``verificationMaterial.publicKey.hint`` set to ``hint``.

    The hint is outside the DSSE envelope: no signature changes.
    """
    data = json.loads(bundle)
    vm = data.get("verificationMaterial")
    if not isinstance(vm, dict) or not isinstance(vm.get("publicKey"), dict):
        raise InputError("the bundle carries no public key hint (keyless bundle?)")
    vm["publicKey"]["hint"] = hint
    return json.dumps(data, separators=(",", ":")).encode()


def unsupported_reason(signer: Signer) -> str | None:
    """Why ``signer`` cannot sign a model_signing signature, or None when it can.

    ``model_signing verify`` takes ECDSA keys (P-256/384/521) or Sigstore keyless
    certificates: an Ed25519 key signs modelseal's attestations but not ``model.sig``.
    Asked before anything is uploaded, so a push signs what its signer can.
    """
    from modelseal.attest.signers import is_keyless

    if is_keyless(signer):
        return None
    try:
        signer_key_hint(signer.public_key)
    except (SigningError, InputError) as e:
        return e.message
    return None


def sign_model_signing_statement(statement: Mapping[str, Any], signer: Signer) -> bytes:
    """Sign a Statement from :func:`model_signing_statement` as ``model.sig`` bytes (with
    model_signing's key hint for keyed signers)."""
    from modelseal.attest.bundle import sign_statement
    from modelseal.attest.signers import is_keyless

    if is_keyless(signer):
        return sign_statement(statement, signer)
    hint = signer_key_hint(signer.public_key)  # refuse unsupported keys before signing
    return with_key_hint(sign_statement(statement, signer), hint)


def sign_model_signing(
    files: Iterable[tuple[str, str]],
    signer: Signer,
    *,
    model_name: str = "model",
    ignore_paths: Sequence[str] = DEFAULT_IGNORE_PATHS,
) -> bytes:
    """``model.sig`` bytes that ``model_signing verify key`` (or ``verify sigstore`` for a
    keyless signer) accepts for a directory holding exactly ``files``."""
    st = model_signing_statement(files, model_name=model_name, ignore_paths=ignore_paths)
    return sign_model_signing_statement(st, signer)
