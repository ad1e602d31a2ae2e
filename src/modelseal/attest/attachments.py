"""Attestations attached to a model: attach Sigstore bundles as OCI referrers, list them, fetch
them, and sign the package step at push time (DESIGN.md section 2)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelseal._util.fs import walk_files
from modelseal._util.json import loads_object as load_json_object
from modelseal.errors import (
    AuthError,
    DigestMismatchError,
    InputError,
    RegistryUnreachableError,
    StoreError,
)
from modelseal.formats import (
    ANN_BUNDLE_CONTENT,
    ANN_CREATED,
    ANN_PREDICATE_TYPE,
    BUNDLE_MEDIA_TYPE,
    MANIFEST_V1,
)
from modelseal.modelpack import Layer
from modelseal.oci.referrers import Attached, attach, fetch_referrer_blob, list_referrers
from modelseal.oci.store import Descriptor, Store

BUNDLE_SUFFIXES = (".sigstore.json", ".sigstore", ".bundle.json", ".intoto.json")


def subject_of(store: Store, reference: str) -> Descriptor:
    """The descriptor of a model manifest (resolving a tag once)."""
    raw, media_type, digest = store.get_manifest(reference)
    artifact_type = None
    with contextlib.suppress(InputError):
        artifact_type = load_json_object(raw, what=f"manifest {digest}").get("artifactType")
    if not isinstance(artifact_type, str):
        artifact_type = None
    return Descriptor(media_type or MANIFEST_V1, digest, len(raw), artifact_type=artifact_type)


def bundle_files(paths: Sequence[str | Path]) -> list[Path]:
    """Bundle files named directly, or found (by suffix) in directories, sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(f.path for f in walk_files(p, exclude=(), follow_symlinks=True)
                       if f.path.name.endswith(BUNDLE_SUFFIXES))
        elif p.is_file():
            out.append(p)
        else:
            raise InputError(f"attestation {p} does not exist")
    return out


def attach_bundle(store: Store, subject: Descriptor, bundle: bytes,
                  source: str = "bundle") -> Attached:
    """Attach one Sigstore bundle (DSSE in-toto Statement) as a referrer of ``subject``."""
    from modelseal.attest.bundle import parse_bundle

    try:
        pb = parse_bundle(bundle)
    except Exception as e:  # parse_bundle raises InputError with the cause
        raise InputError(f"{source} is not a Sigstore bundle: {e}") from e
    anns = {ANN_BUNDLE_CONTENT: "dsse-envelope"}
    if pb.predicate_type:
        anns[ANN_PREDICATE_TYPE] = pb.predicate_type
    return attach(store, subject, artifact_type=BUNDLE_MEDIA_TYPE, blob=bundle,
                  blob_media_type=BUNDLE_MEDIA_TYPE, annotations=anns)


@dataclass(frozen=True)
class AttachOutcome:
    """One bundle given to attach: the referrer now holding it, and whether it was new."""

    digest: str  # of the referrer manifest
    tag: str | None
    source: str
    already_attached: bool
    indexed: bool | None = None  # listed in the fallback index (None: not attached now)

    def to_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, "tag": self.tag, "source": self.source,
                "alreadyAttached": self.already_attached, "indexed": self.indexed}


def statement_digest(statement: Any) -> str:
    """sha256 of a Statement's canonical JSON: equal for the same claims however serialized."""
    from modelseal._util.json import canonical_json
    from modelseal.digest import sha256_bytes

    return sha256_bytes(canonical_json(statement))


MAX_DEDUP_REFERRERS = 500
"""Referrers read to find a bundle already attached (list_referrers sorts oldest first)."""


class AttachedBundles:
    """The bundles already attached to a subject, read once, to make attaching idempotent.

    Attaching again what is there (the same Statement signed by the same signer) adds
    nothing: a CI retry of `push --signer --attestations` must not grow the referrers. Only
    referrers whose (unsigned) predicate-type annotation is one of ``predicate_types`` are
    fetched; a wrong annotation can only cause a duplicate, never a lost attestation.
    """

    def __init__(self, store: Store, subject_digest: str,
                 predicate_types: Sequence[str | None]) -> None:
        from modelseal.attest.bundle import parse_bundle

        wanted = set(predicate_types)
        self._found: list[tuple[Descriptor, bytes, Any, str | None]] = []
        descs = [d for d in list_referrers(store, subject_digest, BUNDLE_MEDIA_TYPE)
                 if d.annotations.get(ANN_PREDICATE_TYPE) in wanted]
        # bounded, newest first: a registry full of look-alikes costs a duplicate at worst
        descs = descs[::-1][:MAX_DEDUP_REFERRERS]
        for d in descs:
            try:
                blob, _ = fetch_referrer_blob(store, d, subject_digest)
                pb = parse_bundle(blob)
                st = pb.statement
            except Exception:  # not ours to judge here; verification names it
                continue
            self._found.append((d, blob, pb, statement_digest(st) if st is not None else None))

    def add(self, desc: Descriptor, blob: bytes) -> None:
        """Remember a bundle attached meanwhile (two identical files in one call)."""
        from modelseal.attest.bundle import parse_bundle

        pb = parse_bundle(blob)
        st = pb.statement
        self._found.append((desc, blob, pb, statement_digest(st) if st is not None else None))

    def same_envelope(self, blob: bytes) -> Descriptor | None:
        """A referrer holding the same signed envelope: same Statement, same signatures."""
        from modelseal.attest.bundle import parse_bundle

        pb = parse_bundle(blob)
        st = pb.statement
        sd = statement_digest(st) if st is not None else None
        sigs = {sig for _, sig in pb.signatures}
        for d, _, other, osd in self._found:
            if (other.payload_type == pb.payload_type and osd == sd and sd is not None
                    and {sig for _, sig in other.signatures} == sigs):
                return d
        return None

    def signed_by(self, statement: Any, signer: Any) -> Descriptor | None:
        """A referrer holding ``statement`` with a signature that verifies as ``signer``'s
        (its key material, or for a keyless signer its identity under Sigstore's root)."""
        from modelseal.attest.bundle import KeylessIdentity, verify_bundle
        from modelseal.attest.signers import is_keyless
        from modelseal.errors import ModelsealError

        sd = statement_digest(statement)
        for d, blob, pb, osd in self._found:
            if osd != sd:
                continue
            try:
                if is_keyless(signer):
                    if not pb.keyless:
                        continue
                    verify_bundle(blob, keyless=[KeylessIdentity(signer.identity,
                                                                 signer.issuer)])
                else:
                    key = signer.public_key
                    verify_bundle(blob, keys={key.keyid: key})
            except ModelsealError:
                continue
            return d
        return None


def attach_bundles_once(store: Store, subject: Descriptor,
                        bundles: Sequence[tuple[str, bytes]],
                        existing: AttachedBundles | None = None) -> list[AttachOutcome]:
    """Attach (source, bundle bytes) pairs, skipping each one already attached (the same
    Statement with the same signatures). All are parsed before anything is pushed."""
    from modelseal.attest.bundle import parse_bundle

    types = []
    for source, data in bundles:
        try:
            types.append(parse_bundle(data).predicate_type)
        except Exception as e:
            raise InputError(f"{source} is not a Sigstore bundle: {e}") from e
    if existing is None:
        existing = AttachedBundles(store, subject.digest, types)
    out = []
    for source, data in bundles:
        there = existing.same_envelope(data)
        if there is not None:
            out.append(AttachOutcome(there.digest, None, source, True))
            continue
        a = attach_bundle(store, subject, data, source)
        existing.add(a.descriptor, data)
        out.append(AttachOutcome(a.descriptor.digest, a.tag, source, False, a.indexed))
    return out


def read_bundles(files: Sequence[Path]) -> list[tuple[str, bytes]]:
    """(file name, bytes) of bundle files, each checked to be a Sigstore bundle: InputError
    naming the file otherwise. Called before anything is uploaded."""
    from modelseal.attest.bundle import parse_bundle

    out = []
    for f in files:
        try:
            data = f.read_bytes()
        except OSError as e:
            raise InputError(f"cannot read {f}: {e.strerror or e}") from e
        try:
            parse_bundle(data)
        except Exception as e:
            raise InputError(f"{f} is not a Sigstore bundle: {e}") from e
        out.append((str(f), data))
    return out


def attach_bundles(store: Store, subject: Descriptor, files: Sequence[Path]) -> list[AttachOutcome]:
    """Attach every bundle file not attached already; all are parsed before anything is
    pushed."""
    return attach_bundles_once(store, subject, read_bundles(files))


@dataclass(frozen=True)
class AttestationInfo:
    descriptor: Descriptor  # of the referrer manifest
    predicate_type: str | None
    created: str | None
    signer: str | None = None  # claimed, not verified
    bundle: bytes | None = None
    error: str | None = None  # why the bundle could not be read (keep_unreadable)
    read: bool = False  # the bundle was fetched (signer and predicate type from it, or error)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"digest": self.descriptor.digest,
                             "predicateType": self.predicate_type, "created": self.created,
                             "signer": self.signer, "read": self.read}
        if self.error is not None:
            d["error"] = self.error
        return d


MAX_LISTED_READS = 100
"""Bundles ``attestations`` reads by default (the newest) for the signer each claims. The
rest are listed from their referrer descriptors alone (predicate type as annotated, creation
time, digest): reading a bundle is a request or two each, and 10,000 of them took 80 s on a
local registry where listing them all takes about a second."""


def list_attestations(store: Store, subject_digest: str, *, predicate_type: str | None = None,
                      fetch: bool = False, workers: int = 8, keep_unreadable: bool = False,
                      read_limit: int | None = None) -> list[AttestationInfo]:
    """Bundles attached to ``subject_digest``, oldest first; with ``fetch``, their bytes and
    claimed signer (``read``), for the newest ``read_limit`` only when it is given: the
    others are listed from their referrer descriptors, not fetched.

    With ``keep_unreadable``, a referrer whose bundle cannot be read (deleted, altered,
    malformed, about another model) is listed with ``error`` saying why and no bundle, and
    the others are still fetched; without it, the first one raises. A registry that cannot
    be reached, refuses the credentials or times out still raises."""
    refs = [d for d in list_referrers(store, subject_digest, BUNDLE_MEDIA_TYPE, workers=workers)
            if predicate_type is None or d.annotations.get(ANN_PREDICATE_TYPE) == predicate_type]

    def unread(d: Descriptor) -> AttestationInfo:
        return AttestationInfo(d, d.annotations.get(ANN_PREDICATE_TYPE),
                               d.annotations.get(ANN_CREATED))

    if not fetch:
        return [unread(d) for d in refs]
    skip = 0 if read_limit is None else max(0, len(refs) - max(0, read_limit))
    from modelseal.attest.bundle import parse_bundle

    def get(d: Descriptor) -> AttestationInfo:
        try:
            blob, _ = fetch_referrer_blob(store, d, subject_digest)
        except (RegistryUnreachableError, AuthError):
            raise  # the registry, not this referrer: nothing else would be readable either
        except (StoreError, DigestMismatchError, InputError) as e:
            if not keep_unreadable:
                raise
            return AttestationInfo(d, d.annotations.get(ANN_PREDICATE_TYPE),
                                   d.annotations.get(ANN_CREATED), error=e.message, read=True)
        signer = None
        ptype = d.annotations.get(ANN_PREDICATE_TYPE)
        try:
            pb = parse_bundle(blob)
            signer, ptype = pb.signer_hint, pb.predicate_type or ptype
        except Exception:  # listed anyway; verification will name the problem
            pass
        return AttestationInfo(d, ptype, d.annotations.get(ANN_CREATED), signer, blob, read=True)

    from modelseal.oci.image_layout import LayoutStore

    head = [unread(d) for d in refs[:skip]]
    if isinstance(store, LayoutStore):
        # A local directory answers in microseconds: threads only add GIL hand-offs
        # (10,000 referrers: 3.1 s with 8 threads); a registry needs them for round trips.
        return head + list(map(get, refs[skip:]))
    with ThreadPoolExecutor(max_workers=workers) as ex:
        return head + list(ex.map(get, refs[skip:]))


PACKAGE_LINK_FILE = "package.link.sigstore.json"


@dataclass
class PackagePlan:
    """What the package step signs: file name -> Statement; and what the signer cannot sign
    (file name -> reason), decided before anything is uploaded."""

    statements: dict[str, dict[str, Any]]
    skipped: dict[str, str]


def package_step_capabilities(signer: Any) -> dict[str, str]:
    """{file: why not} for the package step's bundles ``signer`` cannot sign (empty: all)."""
    from modelseal.attest.model_signing import SIGNATURE_FILE, unsupported_reason

    reason = unsupported_reason(signer)
    return {SIGNATURE_FILE: reason} if reason else {}


def excluded_paths(model_dir: str | Path, patterns: Sequence[str]) -> list[str]:
    """The top-most paths below ``model_dir`` that ``patterns`` leave out, '/'-separated:
    what `model_signing verify` of the source directory must skip, since push did."""
    out: list[str] = []
    # the walk push made (push refused any link it would not follow), recording what it skipped
    walk_files(model_dir, exclude=patterns, follow_symlinks=True, excluded=out)
    return sorted(p for p in out if "\\" not in p)  # model_signing paths are '/'-separated


def plan_package_step(layers: Sequence[Layer], signer: Any, *, command: Sequence[str],
                      model_name: str, ignore_paths: Sequence[str] = ()) -> PackagePlan:
    """The package step's Statements from the digests already computed: an in-toto link
    (materials = products = the model's files) and, when the signer can sign one, an OpenSSF
    model-signing signature. ``ignore_paths`` (e.g. :func:`excluded_paths`) join the ones
    model_signing skips by default."""
    from modelseal.attest.model_signing import (
        DEFAULT_IGNORE_PATHS,
        SIGNATURE_FILE,
        model_signing_statement,
    )
    from modelseal.attest.statement import link_statement

    files = [(la.filepath, la.digest.partition(":")[2]) for la in layers]
    link = link_statement("package", list(command), files, files, byproducts={"return-value": 0},
                          environment={})
    statements = {PACKAGE_LINK_FILE: link}
    skipped = package_step_capabilities(signer)
    if SIGNATURE_FILE not in skipped:
        statements[SIGNATURE_FILE] = model_signing_statement(
            files, model_name=model_name, ignore_paths=[*DEFAULT_IGNORE_PATHS, *ignore_paths])
    return PackagePlan(statements, skipped)


def sign_planned(name: str, statement: Mapping[str, Any], signer: Any) -> bytes:
    """Sign one Statement of a :class:`PackagePlan` (model.sig gets model_signing's hint)."""
    from modelseal.attest.bundle import sign_statement
    from modelseal.attest.model_signing import SIGNATURE_FILE, sign_model_signing_statement

    if name == SIGNATURE_FILE:
        return sign_model_signing_statement(statement, signer)
    return sign_statement(statement, signer)


def sign_package_step(layers: Sequence[Layer], signer: Any, *, command: Sequence[str],
                      model_name: str) -> dict[str, bytes]:
    """Bundles for the package step (see :func:`plan_package_step`): what the signer can sign."""
    plan = plan_package_step(layers, signer, command=command, model_name=model_name)
    return {name: sign_planned(name, st, signer) for name, st in plan.statements.items()}
