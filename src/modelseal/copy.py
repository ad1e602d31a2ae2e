"""Copy a model with all its evidence between any two stores, digest-identical.

``copy(src, src_ref, dst, dst_ref)`` copies the manifest (and, for an image index, the
manifests it lists), the config and layer blobs, and every referrer, recursively (signatures on
a BOM are referrers of a referrer), byte for byte: nothing is re-serialized, so every digest,
and therefore every signature and every in-toto product, stays valid in the new home and the
model verifies there with the same policy.

Order makes an interrupted copy harmless and a rerun cheap:

1. every blob (in parallel; a blob the destination already has is skipped after one HEAD; a
   blob in another repository of the same registry is mounted, not uploaded);
2. the model manifest by digest (no tag yet), then each referrer manifest under its own tag
   (``sha256-<subject>-<referrer>``, as :mod:`modelseal.oci.referrers` attaches them), then the
   OCI 1.1 fallback index of each subject, merged with what the destination had;
3. the model's tag last: a tag in the destination means everything it needs arrived.

A second run after an interruption finds the blobs and referrer tags that arrived and copies
only the rest. The number of referrers and their depth are bounded (hostile registries).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelseal.errors import (
    DigestMismatchError,
    InputError,
    NotFoundError,
    StoreError,
    TagConflictError,
    UsageError,
)
from modelseal.formats import ANN_PREDICATE_TYPE
from modelseal.oci.referrers import add_to_index, list_referrers, referrer_tag
from modelseal.oci.store import Descriptor, Store
from modelseal.refs import Ref
from modelseal.transfer import Progress, run_stopping_on_failure

if TYPE_CHECKING:
    from modelseal.oci.registry import RegistryStore

MAX_REFERRERS = 10_000
MAX_DEPTH = 8
SMALL_BLOB = 4 * 1024 * 1024
STREAM_QUEUE_BLOCKS = 4  # blocks (of up to 4 MiB) between a download and its upload


@dataclass
class _Node:
    """One manifest to copy."""

    digest: str
    raw: bytes
    media_type: str
    subject: str | None = None  # referrers: the manifest they are about
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.raw), self.annotations,
                          self.artifact_type)


@dataclass
class CopyResult:
    """What a copy did (``to_dict`` is the ``--json`` output)."""

    source: str
    destination: str
    digest: str
    tag: str | None
    blobs: int = 0
    blobs_copied: int = 0
    blobs_present: int = 0
    blobs_mounted: int = 0
    blobs_omitted: list[str] = field(default_factory=list)
    bytes_total: int = 0
    bytes_copied: int = 0
    manifests: int = 0
    manifests_written: int = 0
    referrers: list[str] = field(default_factory=list)
    referrers_filtered: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "destination": self.destination, "digest": self.digest,
                "tag": self.tag, "blobs": self.blobs, "blobsCopied": self.blobs_copied,
                "blobsPresent": self.blobs_present, "blobsMounted": self.blobs_mounted,
                "blobsOmitted": self.blobs_omitted, "bytes": self.bytes_total,
                "bytesCopied": self.bytes_copied, "manifests": self.manifests,
                "manifestsWritten": self.manifests_written, "referrers": self.referrers,
                "referrersFiltered": self.referrers_filtered}


def _doc(raw: bytes, digest: str, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise StoreError(f"manifest {digest} in {where} is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise StoreError(f"manifest {digest} in {where} is not a JSON object")
    return doc


def _blobs_of(doc: dict[str, Any], digest: str, where: str) -> list[tuple[Descriptor, bool]]:
    """(descriptor, is a layer of this manifest) for the config and layers."""
    out: list[tuple[Descriptor, bool]] = []
    try:
        if isinstance(doc.get("config"), dict):
            out.append((Descriptor.from_dict(doc["config"]), False))
        for la in doc.get("layers") or []:
            out.append((Descriptor.from_dict(la), True))
    except (KeyError, TypeError, ValueError) as e:
        raise StoreError(f"manifest {digest} in {where} has a malformed descriptor: {e}") from e
    return out


def _wanted(d: Descriptor, filter_types: Collection[str]) -> bool:
    if not filter_types:
        return True
    return (d.artifact_type in filter_types
            or d.annotations.get(ANN_PREDICATE_TYPE) in filter_types)


def collect(src: Store, digest: str, *, filter_types: Collection[str] = (),
            max_referrers: int = MAX_REFERRERS, max_depth: int = MAX_DEPTH,
            workers: int = 8) -> tuple[list[_Node], list[_Node], int]:
    """(model manifests, children first; referrer manifests, subjects first; referrers left
    out by the filter)."""
    where = src.describe()
    raw, media_type, got = src.get_manifest(digest)
    root_doc = _doc(raw, got, where)
    model: list[_Node] = []
    for child in root_doc.get("manifests") or []:  # an image index: its manifests first
        if isinstance(child, dict) and isinstance(child.get("digest"), str):
            craw, cmt, cd = src.get_manifest(child["digest"])
            model.append(_Node(cd, craw, cmt))
    model.append(_Node(got, raw, media_type, artifact_type=root_doc.get("artifactType"),
                       annotations={str(k): str(v) for k, v in
                                    (root_doc.get("annotations") or {}).items()}))
    referrers: list[_Node] = []
    seen = {n.digest for n in model}
    filtered = 0
    level = [model[-1].digest]
    for depth in range(max_depth):
        if not level:
            break
        found: list[tuple[str, Descriptor]] = []
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(level)))) as ex:
            listed = list(ex.map(lambda s: list_referrers(src, s, workers=workers), level))
        for subject, descs in zip(level, listed, strict=True):
            for d in descs:
                if d.digest in seen:
                    continue
                if depth == 0 and not _wanted(d, filter_types):
                    filtered += 1
                    continue
                seen.add(d.digest)
                found.append((subject, d))
        if len(referrers) + len(found) > max_referrers:
            raise StoreError(f"{where} lists more than {max_referrers} referrers of "
                             f"{digest}: refusing to copy them all",
                             hint="use --filter-type to copy only some of them")

        def fetch(item: tuple[str, Descriptor]) -> _Node:
            subject, d = item
            rraw, rmt, rd = src.get_manifest(d.digest)
            doc = _doc(rraw, rd, where)
            if (doc.get("subject") or {}).get("digest") != subject:
                raise StoreError(f"referrer {rd} in {where} is not about {subject}")
            return _Node(rd, rraw, rmt, subject, doc.get("artifactType"),
                         {str(k): str(v) for k, v in (doc.get("annotations") or {}).items()})

        with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
            nodes = list(ex.map(fetch, found))
        referrers.extend(nodes)
        level = [n.digest for n in nodes]
    return model, referrers, filtered


def _try_mount(src: Store, dst: Store, digest: str) -> bool:
    """Mount ``digest`` from the source repository when both are on one registry."""
    from modelseal.oci.registry import RegistryStore

    if not (isinstance(src, RegistryStore) and isinstance(dst, RegistryStore)):
        return False
    if src.host != dst.host or src.scheme != dst.scheme or src.repository == dst.repository:
        return False
    return dst.mount_blob(digest, src.repository)


def _stream_blob(src: Store, dst: RegistryStore, d: Descriptor,
                 advance: Callable[[int], None]) -> None:
    """Upload blob ``d`` to ``dst`` while it downloads from ``src`` (read ahead by a thread,
    so the two transfers overlap in constant memory; each byte is hashed once, by the source's
    checked stream, before the last one is sent); a dropped connection restarts the whole
    blob (a stream cannot be rewound), as the retry policy allows."""
    from modelseal.oci.registry import UploadRestart

    high = [0]  # bytes reported so far: a restarted stream does not advance the bar twice
    pos = [0]

    def sent(n: int) -> None:
        pos[0] += n
        if pos[0] > high[0]:
            advance(pos[0] - high[0])
            high[0] = pos[0]

    for attempt in range(dst.retry.attempts):
        pos[0] = 0
        chunks = src.open_blob(d.digest, d.size, read_ahead=STREAM_QUEUE_BLOCKS)
        try:
            dst.put_blob_stream(chunks, d.digest, d.size, sent)
            return
        except UploadRestart:
            if attempt + 1 >= dst.retry.attempts:
                raise
            dst.retry.pause(attempt)
        finally:
            chunks.close()


def _local_blob(src: Store, digest: str) -> Path | None:
    """A file already holding the blob (an image-layout source), to upload without a copy."""
    from modelseal.oci.archive import ArchiveStore
    from modelseal.oci.image_layout import LayoutStore

    if isinstance(src, LayoutStore):
        p = src.root / "blobs" / "sha256" / digest.partition(":")[2]
        return p if p.is_file() else None
    if isinstance(src, ArchiveStore):
        return src.blob_path(digest)
    return None


def _copy_blobs(src: Store, dst: Store, blobs: dict[str, Descriptor], result: CopyResult,
                progress: Progress, workers: int) -> None:
    from modelseal.oci.registry import RegistryStore

    lock = threading.Lock()
    staging: Path | None = None
    advance = progress.start("copying", sum(d.size for d in blobs.values()))

    def one(d: Descriptor) -> None:
        nonlocal staging
        if dst.has_blob(d.digest):
            advance(d.size)
            with lock:
                result.blobs_present += 1
            return
        if _try_mount(src, dst, d.digest):
            advance(d.size)
            with lock:
                result.blobs_mounted += 1
            return
        local = _local_blob(src, d.digest)
        if local is None and d.size <= SMALL_BLOB:
            # Small blobs (configs, shards, bundles) go through memory: no temporary file.
            data = src.get_blob_bytes(d.digest, max_size=SMALL_BLOB)
            if len(data) != d.size:
                raise DigestMismatchError(f"blob {d.digest} in {src.describe()} is "
                                          f"{len(data)} bytes, the manifest says {d.size}")
            dst.put_blob_bytes(data)
            advance(d.size)
        elif local is not None:
            dst.put_blob_file(local, d.digest, d.size, advance)
        elif isinstance(dst, RegistryStore):
            # Uploaded while it downloads: no temporary file, the two transfers overlap.
            _stream_blob(src, dst, d, advance)
        else:
            with lock:
                if staging is None:
                    staging = Path(tempfile.mkdtemp(
                        prefix="modelseal-copy-", dir=os.environ.get("MODELSEAL_COPY_TMPDIR")))
            tmp = staging / d.digest.partition(":")[2]

            # Half the bar for the download, half for the upload: both take time.
            def fetched(n: int) -> None:
                advance(n // 2)

            def uploaded(n: int) -> None:
                advance(n - n // 2)

            with open(tmp, "wb") as out:
                src.fetch_blob(d.digest, d.size, out, fetched)

            try:
                dst.put_blob_file(tmp, d.digest, d.size, uploaded)
            finally:
                with contextlib.suppress(OSError):
                    tmp.unlink()
        with lock:
            result.blobs_copied += 1
            result.bytes_copied += d.size

    try:
        run_stopping_on_failure(one, list(blobs.values()), workers)
    finally:
        progress.finish()
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def copy(src: Store, src_ref: Ref, dst: Store, dst_ref: Ref, *,
         filter_types: Collection[str] = (), workers: int = 8,
         progress: Progress | None = None, allow_retag: bool = False,
         omit_layer: Callable[[Descriptor], bool] | None = None,
         max_referrers: int = MAX_REFERRERS) -> CopyResult:
    """Copy the model at ``src_ref`` with every referrer to ``dst_ref``, digest-identical.

    ``omit_layer`` leaves out the model layers it is true for (an audit bundle without the
    weights: their digests stay in the manifest, which is all verification needs).
    """
    progress = progress or Progress()
    digest = src.resolve(src_ref.reference)
    if digest is None:
        raise NotFoundError(f"{src_ref} not found in {src.describe()}")
    if src_ref.digest and digest != src_ref.digest:
        raise StoreError(f"{src.describe()} answered {digest} for {src_ref.digest}")
    tag = dst_ref.tag if dst_ref.tag else src_ref.tag
    if dst_ref.digest and dst_ref.digest != digest:
        raise InputError(f"destination {dst_ref} names {dst_ref.digest}, but the source is "
                         f"{digest}")
    if tag is not None:
        existing = dst.resolve(tag)
        if existing is not None and existing != digest and not allow_retag:
            raise TagConflictError(
                f"tag {tag!r} in {dst.describe()} already points at {existing}; copying "
                f"{digest} there would move it: refused",
                hint="copy under another tag, or pass --allow-retag")
    model, referrers, filtered = collect(src, digest, filter_types=filter_types,
                                         max_referrers=max_referrers, workers=workers)
    result = CopyResult(str(src_ref.with_digest(digest)), str(dst_ref.with_tag(tag)), digest,
                        tag, referrers=[n.digest for n in referrers],
                        referrers_filtered=filtered)
    blobs: dict[str, Descriptor] = {}
    omitted: dict[str, None] = {}  # ordered set
    for n in model + referrers:
        for d, is_layer in _blobs_of(_doc(n.raw, n.digest, src.describe()), n.digest,
                                     src.describe()):
            if (is_layer and n.subject is None and omit_layer is not None
                    and omit_layer(d)):
                omitted[d.digest] = None
            else:
                blobs.setdefault(d.digest, d)
    result.blobs_omitted = [d for d in omitted if d not in blobs]
    result.blobs = len(blobs)
    result.bytes_total = sum(d.size for d in blobs.values())
    from modelseal.oci.archive import ArchiveStore

    if isinstance(src, ArchiveStore):  # a local file: asking costs nothing
        absent = [d for d in blobs if not src.has_blob(d)]
        if absent:
            raise UsageError(
                f"{src.describe()} lacks {len(absent)} blob(s) of the model (e.g. "
                f"{absent[0]}): an audit bundle exported without --with-weights holds the "
                "evidence only, and a registry or directory refuses a model without its "
                "blobs", hint="verify it where it is (modelseal bundle verify), or export "
                "again with --with-weights to restore the model")
    _copy_blobs(src, dst, blobs, result, progress, workers)

    try:
        dst_tags = set(dst.list_tags())
    except NotFoundError:
        dst_tags = set()
    result.manifests = len(model) + len(referrers)
    for n in model:
        if dst.resolve(n.digest) is None:
            dst.put_manifest(n.raw, n.media_type)
            result.manifests_written += 1

    def put_referrer(n: _Node) -> bool:
        assert n.subject is not None
        rtag = referrer_tag(n.subject, n.digest)
        if rtag in dst_tags and dst.resolve(rtag) == n.digest:
            return False
        dst.put_manifest(n.raw, n.media_type, rtag)
        return True

    by_subject: dict[str, list[Descriptor]] = {}
    for n in referrers:
        assert n.subject is not None
        by_subject.setdefault(n.subject, []).append(n.descriptor())
    # Subjects before their referrers: one depth level at a time (collect's order).
    levels: list[list[_Node]] = []
    placed: set[str] = {m.digest for m in model}
    pending = list(referrers)
    while pending:
        level = [n for n in pending if n.subject in placed]
        if not level:
            level = pending  # subjects outside the copy: cannot happen, keep going anyway
        levels.append(level)
        placed.update(n.digest for n in level)
        pending = [n for n in pending if n.digest not in placed]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        for level in levels:
            result.manifests_written += sum(ex.map(put_referrer, level))
    for subject, descs in by_subject.items():
        if dst.referrers_api(subject) is None:
            add_to_index(dst, subject, descs)
    if tag is not None and dst.resolve(tag) != digest:
        dst.put_manifest(model[-1].raw, model[-1].media_type, tag)
        result.manifests_written += 1
    return result

