"""Signed output, one way for every command: sign a Statement, name the bundle, write it
atomically, and (optionally) attach it to a model as an OCI referrer.

The naming rule (docs/format.md, "Attestation files"): a bundle is written to
``<directory>/<name>.<keyid8>.intoto.sigstore.json``, where ``name`` is the step or the kind
of attestation (``train``, ``provenance``, ``bom``, ``scan``, ``package``...) and ``keyid8``
the first 8 hex digits of the signer's keyid (a keyless signer's too: its key stands for its
identity), so two signers of one step never overwrite each other. ``directory`` defaults to
``.modelseal/attestations``. The one exception is the OpenSSF model-signing signature, written
as ``model.sig``: the name model_signing tools expect and skip inside a model directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelseal.errors import InputError, UsageError

if TYPE_CHECKING:
    from securesystemslib.signer import Signer

    from modelseal.oci.referrers import Attached
    from modelseal.oci.store import Descriptor, Store

DEFAULT_ATTESTATIONS_DIR = Path(".modelseal") / "attestations"
ATTESTATION_SUFFIX = ".intoto.sigstore.json"

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class SignedOutput:
    """A signed bundle, where it was written, and the referrer holding it (None: not
    attached)."""

    bundle: bytes
    path: Path
    attached: Attached | None = None


_STEP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_step_name(name: str) -> str:
    """Step names become file names: letters, digits, ``.``, ``_``, ``-``."""
    if not _STEP_NAME.match(name) or ".." in name:
        raise UsageError(f"step name {name!r} is not allowed",
                         hint="use letters, digits, '.', '_' and '-' (e.g. train, eval-1)")
    return name


def signer_keyid(signer: Signer) -> str:
    """The keyid a bundle file is named after (keyless signers have one for their identity)."""
    return str(signer.public_key.keyid)


def attestation_filename(name: str, signer: Signer | str) -> str:
    """``<name>.<first 8 hex of keyid>.intoto.sigstore.json``, as in-toto names links.
    ``signer`` is a signer or its keyid."""
    check_step_name(name)
    kid = signer if isinstance(signer, str) else signer_keyid(signer)
    return f"{name}.{kid[:8]}{ATTESTATION_SUFFIX}"


def write_file(data: bytes, path: PathLike) -> Path:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename), creating its
    directory; an unwritable place is an InputError naming it."""
    from modelseal._util.fs import atomic_write

    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(target, data)
    except OSError as e:
        raise InputError(f"cannot write {target}: {e.strerror or e}") from e


def bundle_path(name: str, signer: Signer, *, directory: PathLike | None = None,
                path: PathLike | None = None, filename: str | None = None) -> Path:
    """Where a bundle goes: ``path`` when given, else ``directory`` (default
    ``.modelseal/attestations``) / ``filename`` (default the naming rule)."""
    if path is not None:
        return Path(path)
    base = Path(directory) if directory is not None else DEFAULT_ATTESTATIONS_DIR
    return base / (filename or attestation_filename(name, signer))


def write_signed(bundle: bytes, signer: Signer, name: str, *,
                 directory: PathLike | None = None, path: PathLike | None = None,
                 filename: str | None = None, store: Store | None = None,
                 subject: Descriptor | None = None) -> SignedOutput:
    """Write a bundle already signed (see :func:`sign_and_write`), then attach it to
    ``subject`` in ``store`` when both are given."""
    written = write_file(bundle, bundle_path(name, signer, directory=directory, path=path,
                                             filename=filename))
    attached = None
    if store is not None and subject is not None:
        from modelseal.attest.attachments import attach_bundle

        attached = attach_bundle(store, subject, bundle, written.name)
    return SignedOutput(bundle, written, attached)


def sign(statement: Mapping[str, Any], signer: Signer) -> bytes:
    """Sign ``statement``: a DSSE envelope in a Sigstore bundle (countersigned by the TSA of
    an enclosing ``attest.tsa.timestamping`` block, if any). For output that is not a file
    (``-o -``); everything else goes through :func:`sign_and_write`."""
    from modelseal.attest.bundle import sign_statement

    return sign_statement(statement, signer)


def sign_and_write(statement: Mapping[str, Any], signer: Signer, name: str, *,
                   directory: PathLike | None = None, path: PathLike | None = None,
                   filename: str | None = None, store: Store | None = None,
                   subject: Descriptor | None = None,
                   signer_fn: Callable[[Mapping[str, Any], Signer], bytes] | None = None,
                   ) -> SignedOutput:
    """Sign ``statement`` (``signer_fn`` overrides how, e.g. for model.sig), write it by the
    naming rule (or to ``path``), and attach it to ``subject`` in ``store`` when both are
    given. Signing happens before anything is written: a failed signature (an unreachable
    TSA) leaves no file."""
    bundle = (signer_fn or sign)(statement, signer)
    return write_signed(bundle, signer, name, directory=directory, path=path,
                        filename=filename, store=store, subject=subject)
