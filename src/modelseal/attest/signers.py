"""Signers, chosen by securesystemslib private-key URI: one code path for every key a company uses.

``--signer`` takes a URI or simply the path of a PEM private key:

- ``PATH`` or ``file2:PATH``: a PKCS#8 PEM private key (ECDSA P-256/P-384, Ed25519), encrypted
  or not. The passphrase comes from ``$MODELSEAL_KEY_PASSPHRASE`` or, on a terminal, a prompt.
- ``hsm:[KEYID][?label=TOKEN]``: a key on a PKCS#11 token. The module is ``$PYKCS11LIB``
  (default: SoftHSM2's when installed), the PIN ``$MODELSEAL_HSM_PIN`` or a prompt.
- ``sigstore:[?ambient=false][&trust_config=FILE|&instance=staging]``: keyless, with an OIDC
  token from ``$SIGSTORE_IDENTITY_TOKEN``, the CI's ambient credentials, or a browser login.
- ``gcpkms:``, ``awskms:``, ``azurekms:``, ``hv:``: cloud KMS and Vault, passed through to
  securesystemslib; the public key is fetched from the KMS unless given.

Only this module reads environment variables for secrets; everything else takes arguments.
"""

from __future__ import annotations

import getpass
import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib import parse

from modelseal.errors import InputError, SigningError, UsageError

if TYPE_CHECKING:
    from securesystemslib.signer import Key, Signature, Signer

PASSPHRASE_ENV = "MODELSEAL_KEY_PASSPHRASE"
HSM_PIN_ENV = "MODELSEAL_HSM_PIN"
PKCS11_LIB_ENV = "PYKCS11LIB"
OIDC_TOKEN_ENV = "SIGSTORE_IDENTITY_TOKEN"
SOFTHSM_LIB = "/usr/lib/softhsm/libsofthsm2.so"

Algorithm = Literal["ecdsa-p256", "ecdsa-p384", "ed25519"]
ALGORITHMS: tuple[Algorithm, ...] = ("ecdsa-p256", "ecdsa-p384", "ed25519")

KMS_SCHEMES = ("gcpkms", "awskms", "azurekms", "hv")
KNOWN_SCHEMES = ("file2", "hsm", "sigstore", *KMS_SCHEMES)


_DEFERRED = ("boto3", "botocore", "pkcs11")


class _DeferAWS:
    """Import finder that makes ``boto3``/``botocore`` (AWS KMS) and ``pkcs11`` (HSMs) look
    absent, for a moment: their backends are reloaded when a URI of theirs is used."""

    @staticmethod
    def find_spec(name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".")[0] in _DEFERRED:
            raise ImportError(f"{name} deferred by modelseal")
        return None


def sslib_signer() -> Any:
    """``securesystemslib.signer``, imported without boto3.

    Its package __init__ imports every backend, and boto3 alone costs ~0.3 s: more than hashing
    a model's small files. The AWS backend is reloaded with boto3 when an ``awskms:`` URI is
    actually used (see ``_load_kms_signer``).
    """
    if "securesystemslib.signer" not in sys.modules and "boto3" not in sys.modules:
        finder = _DeferAWS()
        sys.meta_path.insert(0, finder)
        try:
            importlib.import_module("securesystemslib.signer")
        finally:
            sys.meta_path.remove(finder)
    import securesystemslib.signer as mod

    return mod


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


def _secret(env: str, what: str, signer: str, prompt: bool | None) -> str:
    """A secret from ``env``, else a prompt on a terminal, else a SigningError."""
    value = os.environ.get(env)
    if value is not None:
        return value
    if prompt is None:
        prompt = _interactive()
    if prompt:
        return getpass.getpass(f"{what} for {signer}: ")
    raise SigningError(
        f"{signer} needs a {what} and there is no terminal to ask for it",
        hint=f"set {env}",
    )


# ---------------------------------------------------------------------------------------------
# key files


def keygen(
    name: str | os.PathLike[str],
    *,
    algorithm: Algorithm = "ecdsa-p256",
    passphrase: bytes | None = None,
) -> tuple[Path, Path]:
    """Write ``NAME.key`` (PKCS#8 PEM, mode 0600, never overwritten) and ``NAME.pub`` (SPKI PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    base = Path(name)
    if base.suffix in (".key", ".pub"):
        base = base.with_suffix("")
    key_path = base.parent / (base.name + ".key")
    pub_path = base.parent / (base.name + ".pub")
    if algorithm == "ecdsa-p256":
        priv: Any = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == "ecdsa-p384":
        priv = ec.generate_private_key(ec.SECP384R1())
    elif algorithm == "ed25519":
        priv = ed25519.Ed25519PrivateKey.generate()
    else:
        raise UsageError(f"unknown key algorithm {algorithm!r}",
                         hint="use one of " + ", ".join(ALGORITHMS))
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase
        else serialization.NoEncryption())
    priv_pem = priv.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8, enc)
    pub_pem = priv.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    for p in (key_path, pub_path):
        if p.exists() or p.is_symlink():
            raise InputError(f"{p} already exists; refusing to overwrite a key")
    try:
        # O_EXCL: a key file that appeared meanwhile (or a planted symlink) is never written
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError as e:
        raise InputError(f"{key_path} already exists; refusing to overwrite a key") from e
    except OSError as e:
        raise InputError(f"cannot create {key_path}: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(priv_pem)
            f.flush()
            os.fsync(f.fileno())
        fd2 = os.open(pub_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd2, "wb") as f:
            f.write(pub_pem)
    except OSError as e:
        key_path.unlink(missing_ok=True)
        raise InputError(f"cannot write key pair {base}: {e.strerror or e}") from e
    return key_path, pub_path


def load_public_key(path: str | os.PathLike[str]) -> Key:
    """A securesystemslib key from a PEM public key (SPKI) file or a certificate-less PEM."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    SSlibKey = sslib_signer().SSlibKey
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise InputError(f"cannot read public key {path}: {e.strerror or e}") from e
    try:
        key: Key = SSlibKey.from_crypto(load_pem_public_key(data))
        return key
    except (ValueError, TypeError) as e:
        raise InputError(f"{path} is not a PEM public key of a supported type: {e}") from e


def public_key_from_pem(pem: bytes) -> Key:
    """A securesystemslib key from PEM bytes."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    SSlibKey = sslib_signer().SSlibKey
    try:
        key: Key = SSlibKey.from_crypto(load_pem_public_key(pem))
        return key
    except (ValueError, TypeError) as e:
        raise InputError(f"not a PEM public key of a supported type: {e}") from e


def keyid(key: Key) -> str:
    """The securesystemslib keyid (sha256 of the key's canonical JSON)."""
    return str(key.keyid)


def public_key_pem(key: Key) -> str:
    """The SPKI PEM of a securesystemslib SSlibKey."""
    from cryptography.hazmat.primitives import serialization

    crypto = key._crypto_key()  # type: ignore[attr-defined]
    pem: bytes = crypto.public_bytes(serialization.Encoding.PEM,
                                     serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem.decode()


def _load_file_signer(path: str, *, passphrase_env: str, prompt: bool | None) -> Signer:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    CryptoSigner = sslib_signer().CryptoSigner

    label = f"key file {path}"
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as e:
        raise SigningError(f"{label}: no such file",
                           hint="create one with `modelseal keygen NAME`") from e
    except OSError as e:
        raise SigningError(f"{label}: cannot read: {e.strerror or e}") from e
    if b"-----BEGIN" not in data:
        raise SigningError(f"{label} is not a PEM private key")
    try:
        try:
            priv = load_pem_private_key(data, None)
        except TypeError:  # encrypted: ask for the passphrase only now
            secret = _secret(passphrase_env, "passphrase", label, prompt)
            priv = load_pem_private_key(data, secret.encode())
    except ValueError as e:
        if b"ENCRYPTED" in data:
            raise SigningError(f"{label}: wrong passphrase (or damaged key)",
                               hint=f"the passphrase is read from {passphrase_env}") from e
        raise SigningError(f"{label} cannot be loaded: {e}") from e
    except Exception as e:
        raise SigningError(f"{label} cannot be loaded: {e}") from e
    if isinstance(priv, ec.EllipticCurvePrivateKey):
        if not isinstance(priv.curve, (ec.SECP256R1, ec.SECP384R1)):
            raise SigningError(f"{label}: curve {priv.curve.name} is not supported",
                               hint="use ECDSA P-256, P-384 or Ed25519")
    elif not isinstance(priv, ed25519.Ed25519PrivateKey):
        raise SigningError(f"{label}: {type(priv).__name__} keys are not supported",
                           hint="use ECDSA P-256, P-384 or Ed25519")
    signer: Signer = CryptoSigner(priv)
    return signer


# ---------------------------------------------------------------------------------------------
# PKCS#11


def pkcs11_lib_path() -> str:
    """The PKCS#11 module: ``$PYKCS11LIB``, else SoftHSM2's when installed."""
    lib = os.environ.get(PKCS11_LIB_ENV)
    if lib:
        return lib
    if os.path.exists(SOFTHSM_LIB):
        return SOFTHSM_LIB
    raise SigningError("no PKCS#11 module configured",
                       hint=f"set {PKCS11_LIB_ENV} to the token's PKCS#11 library")


def _hsm_signer_class() -> type[Signer]:
    sslib_signer()
    hsm = importlib.import_module("securesystemslib.signer._hsm_signer")
    if getattr(hsm, "PKCS11_IMPORT_ERROR", None):  # imported with pkcs11 deferred: load it now
        hsm = importlib.reload(hsm)
    base: Any = hsm.HSMSigner

    class _HSMSigner(base):  # type: ignore[misc]
        """HSMSigner that finds its module without requiring PYKCS11LIB to be set."""

        @classmethod
        def _find_token(cls, token_label: str | None = None) -> Any:
            import pkcs11
            from pkcs11.exceptions import MultipleTokensReturned, NoSuchToken

            where = f" labelled {token_label!r}" if token_label else ""
            try:
                return pkcs11.lib(pkcs11_lib_path()).get_token(
                    token_label=token_label, token_flags=pkcs11.TokenFlag.TOKEN_INITIALIZED)
            except NoSuchToken as e:
                raise ValueError(f"no PKCS#11 token{where} found") from e
            except MultipleTokensReturned as e:
                raise ValueError(f"several PKCS#11 tokens{where}: name one with ?label=") from e

    return _HSMSigner


def _load_hsm_signer(uri: str, *, prompt: bool | None) -> Signer:
    import pkcs11
    from pkcs11 import exceptions as p11e

    label = f"PKCS#11 signer {uri}"
    parsed = parse.urlparse(uri)
    try:
        hsm_keyid = int(parsed.path) if parsed.path else None
    except ValueError as e:
        raise SigningError(f"{label}: the key id {parsed.path!r} is not a number",
                           hint="hsm:2?label=TOKEN signs with key id 2") from e
    token_label = dict(parse.parse_qsl(parsed.query)).get("label")
    cls: Any = _hsm_signer_class()
    pin_cache: list[str] = []

    def pin_handler(_: str) -> str:
        if not pin_cache:
            pin_cache.append(_secret(HSM_PIN_ENV, "PIN", label, prompt))
        return pin_cache[0]

    try:
        lib = pkcs11_lib_path()
        if not os.path.exists(lib):
            raise SigningError(f"{label}: PKCS#11 module {lib} does not exist",
                               hint=f"set {PKCS11_LIB_ENV}")
        token = cls._find_token(token_label)
        # log in now, so that a wrong PIN fails before a long step runs, not after it
        with token.open(user_pin=pin_handler("pin")):
            pass
        priv_uri, pub = cls.import_(hsm_keyid, token_label, pin_handler)
        signer: Signer = cls.from_priv_key_uri(priv_uri, pub, pin_handler)
    except SigningError:
        raise
    except p11e.PinIncorrect as e:
        raise SigningError(f"{label}: wrong PIN", hint=f"the PIN is read from {HSM_PIN_ENV}") from e
    except p11e.PinLocked as e:
        raise SigningError(f"{label}: the token's PIN is locked") from e
    except (ValueError, pkcs11.PKCS11Error, OSError, RuntimeError) as e:
        raise SigningError(f"{label}: {e or type(e).__name__}") from e
    return signer


# ---------------------------------------------------------------------------------------------
# Sigstore keyless


def _keyless_signer_class() -> type[Signer]:
    mod = sslib_signer()
    base: Any = mod.Signer
    signature_cls: Any = mod.Signature

    class KeylessSigner(base):  # type: ignore[misc]
        """Sigstore keyless signer holding an OIDC token and a client trust config.

        ``sign()`` behaves like securesystemslib's SigstoreSigner (a message signature whose
        bundle is in the Signature's unrecognized fields); ``sign_dsse()`` is what modelseal
        uses, so the transparency log records the DSSE envelope itself.
        """

        SCHEME = "sigstore"

        def __init__(self, token: Any, trust_config: Any, public_key: Key) -> None:
            self._token = token
            self._trust_config = trust_config
            self._public_key = public_key

        @property
        def public_key(self) -> Key:
            return self._public_key

        @property
        def identity(self) -> str:
            return str(self._token.identity)

        @property
        def issuer(self) -> str:
            return str(self._token.federated_issuer)

        @classmethod
        def from_priv_key_uri(cls, priv_key_uri: str, public_key: Key,
                              secrets_handler: Callable[[str], str] | None = None) -> Signer:
            return load_signer(priv_key_uri)

        def _context(self) -> Any:
            from sigstore.sign import SigningContext

            return SigningContext.from_trust_config(self._trust_config)

        def sign(self, payload: bytes) -> Signature:
            import json

            with self._context().signer(self._token) as s:
                bundle = s.sign_artifact(payload)
            bundle_json = json.loads(bundle.to_json())
            sig: Signature = signature_cls(self._public_key.keyid,
                                           bundle_json["messageSignature"]["signature"],
                                           {"bundle": bundle_json})
            return sig

        def sign_dsse(self, statement_json: bytes) -> bytes:
            """Sign an in-toto Statement keylessly; the Sigstore bundle v0.3 as JSON bytes."""
            from sigstore import dsse

            with self._context().signer(self._token) as s:
                bundle = s.sign_dsse(dsse.Statement(statement_json))
            return str(bundle.to_json()).encode()

    return KeylessSigner


def load_client_trust_config(spec: str | os.PathLike[str] | None, *, offline: bool = False) -> Any:
    """A sigstore ClientTrustConfig: ``production`` (default), ``staging`` or a JSON file.

    A private Sigstore deployment is a ``ClientTrustConfig`` JSON file (trusted root plus
    signing config), as ``sigstore --trust-config`` takes.
    """
    from sigstore.models import ClientTrustConfig

    name = str(spec) if spec is not None else "production"
    try:
        if name == "production":
            return ClientTrustConfig.production(offline=offline)
        if name == "staging":
            return ClientTrustConfig.staging(offline=offline)
        return ClientTrustConfig.from_json(Path(name).read_text())
    except OSError as e:
        raise SigningError(f"cannot read Sigstore trust config {name}: {e.strerror or e}") from e
    except Exception as e:
        raise SigningError(f"cannot load Sigstore trust config {name}: {e}") from e


def _load_sigstore_signer(uri: str, *, prompt: bool | None,
                          trust_config: str | os.PathLike[str] | None) -> Signer:
    SigstoreSigner = sslib_signer().SigstoreSigner
    from sigstore.oidc import IdentityError, IdentityToken, Issuer, detect_credential

    label = f"Sigstore keyless signer {uri}"
    params = dict(parse.parse_qsl(parse.urlparse(uri).query))
    ambient = params.get("ambient", "true").lower() not in ("false", "0", "no")
    spec = params.get("trust_config") or params.get("instance") or trust_config
    config = None
    try:
        raw = os.environ.get(OIDC_TOKEN_ENV)
        if raw is None and ambient:
            raw = detect_credential()
        if raw is not None:
            token = IdentityToken(raw)
        else:
            if prompt is None:
                prompt = _interactive()
            if not prompt:
                raise SigningError(
                    f"{label}: no OIDC token (no ambient CI credentials found, no terminal"
                    " for a browser login)",
                    hint=f"run in CI with id-token permission, or set {OIDC_TOKEN_ENV}")
            config = load_client_trust_config(spec)
            token = Issuer(config.signing_config.get_oidc_url()).identity_token()
    except SigningError:
        raise
    except IdentityError as e:
        raise SigningError(f"{label}: OIDC token refused: {e}") from e
    except Exception as e:
        raise SigningError(f"{label}: cannot get an OIDC token: {e}") from e
    if config is None:
        config = load_client_trust_config(spec)
    _, pub = SigstoreSigner.import_(str(token.identity), str(token.federated_issuer), ambient)
    cls: Any = _keyless_signer_class()
    signer: Signer = cls(token, config, pub)
    return signer


def is_keyless(signer: Signer) -> bool:
    """True for a Sigstore keyless signer (bundles carry a certificate, not a key hint)."""
    return hasattr(signer, "sign_dsse")


# ---------------------------------------------------------------------------------------------
# KMS pass-through


def _load_kms_signer(uri: str, public_key: Key | None) -> Signer:
    mod = sslib_signer()
    GCPSigner, AzureSigner, VaultSigner = mod.GCPSigner, mod.AzureSigner, mod.VaultSigner
    AWSSigner = mod.AWSSigner
    if uri.startswith("awskms:") and "boto3" not in sys.modules:
        # imported without boto3 by sslib_signer(): load the real backend now
        aws = importlib.reload(importlib.import_module("securesystemslib.signer._aws_signer"))
        AWSSigner = aws.AWSSigner
        mod.SIGNER_FOR_URI_SCHEME[AWSSigner.SCHEME] = AWSSigner

    label = f"KMS signer {uri}"
    parsed = parse.urlparse(uri)
    try:
        if public_key is None:
            if parsed.scheme == "gcpkms":
                uri, public_key = GCPSigner.import_(parsed.path)
            elif parsed.scheme == "awskms":
                uri, public_key = AWSSigner.import_(parsed.path)
            elif parsed.scheme == "hv":
                uri, public_key = VaultSigner.import_(parsed.path.split("/")[0])
            elif parsed.scheme == "azurekms":
                vault = parsed.netloc.split(".")[0]
                key_name = parsed.path.strip("/").split("/")[1]
                uri, public_key = AzureSigner.import_(vault, key_name)
        if public_key is None:
            raise ValueError("the public key is needed; pass it (--public-key PEM)")
        # securesystemslib dispatches on the URI's scheme (SIGNER_FOR_URI_SCHEME)
        signer: Signer = mod.Signer.from_priv_key_uri(uri, public_key)
        return signer
    except Exception as e:
        raise SigningError(f"{label} cannot be used: {e or type(e).__name__}") from e


# ---------------------------------------------------------------------------------------------


def load_signer(
    uri_or_path: str,
    *,
    passphrase_env: str = PASSPHRASE_ENV,
    prompt: bool | None = None,
    public_key: Key | None = None,
    trust_config: str | os.PathLike[str] | None = None,
) -> Signer:
    """A securesystemslib Signer for a private-key URI or the path of a PEM private key.

    ``prompt`` None asks on a terminal only. Everything needed to sign (passphrase, PIN, OIDC
    token) is obtained and checked here, so a bad signer fails before a step runs.
    """
    spec = uri_or_path.strip()
    if not spec:
        raise UsageError("empty signer", hint="give a key file path or a signer URI")
    scheme, sep, rest = spec.partition(":")
    is_uri = bool(sep) and scheme.isidentifier() and len(scheme) > 1
    if not is_uri or os.path.exists(spec):
        return _load_file_signer(spec, passphrase_env=passphrase_env, prompt=prompt)
    if scheme == "file2":
        path = parse.unquote(parse.urlparse(spec).path or rest)
        prefix = os.environ.get("CRYPTO_SIGNER_PATH_PREFIX")
        if prefix:
            path = os.path.join(prefix, path)
        return _load_file_signer(path, passphrase_env=passphrase_env, prompt=prompt)
    if scheme == "hsm":
        return _load_hsm_signer(spec, prompt=prompt)
    if scheme == "sigstore":
        return _load_sigstore_signer(spec, prompt=prompt, trust_config=trust_config)
    if scheme in KMS_SCHEMES:
        return _load_kms_signer(spec, public_key)
    raise SigningError(
        f"unknown signer {spec!r}: scheme {scheme!r} is not supported",
        hint="use a PEM key path, or one of " + ", ".join(f"{s}:" for s in KNOWN_SCHEMES))


def signer_description(signer: Signer) -> str:
    """A short name for messages: keyid for keys, identity for keyless."""
    if is_keyless(signer):
        return f"{signer.identity} ({signer.issuer})"  # type: ignore[attr-defined]
    return f"key {signer.public_key.keyid[:16]}"


def sign_bytes(signer: Signer, data: bytes, *, what: str = "payload") -> Signature:
    """``signer.sign(data)``, with any backend failure turned into a SigningError."""
    try:
        return signer.sign(data)
    except SigningError:
        raise
    except Exception as e:
        raise SigningError(f"signing the {what} with {signer_description(signer)} failed: "
                           f"{e or type(e).__name__}") from e
