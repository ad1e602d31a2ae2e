"""The store interface: what every OCI backend (registry, image-layout directory, archive)
offers, and the one place where the bytes they hand out are checked.

Everything above this module speaks of digests; a tag is resolved once, at the edge.

A backend subclasses :class:`BlobStore` and supplies raw, unchecked reads (``_read_blob``,
``_read_small_blob``, ``_read_manifest``); the base class checks every byte against its digest
and size once, in :class:`BlobStream` (streams) and :func:`check_bytes` (bytes in memory),
before handing it out. Writers that take a stream in (``put_blob_stream``, an image layout
ingesting a file) check it through the same :class:`BlobStream`.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import re
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from modelseal._util import network
from modelseal._util.json import type_name
from modelseal.digest import sha256_bytes
from modelseal.errors import DigestMismatchError, InputError, StoreError
from modelseal.refs import ANY_DIGEST_RE, DIGEST_RE

ProgressFn = Callable[[int], None]
Chunk = bytes | bytearray | memoryview
MAX_SMALL_BLOB = 64 * 1024 * 1024
MAX_MANIFEST_CACHE_ITEM = 16 * 1024  # small manifests are kept once checked ...
MAX_MANIFEST_CACHE_BYTES = 32 * 1024 * 1024  # ... up to this much in all, per store


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    artifact_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest,
                             "size": self.size}
        if self.artifact_type:
            d["artifactType"] = self.artifact_type
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        return d

    @classmethod
    def from_dict(cls, d: Any, what: str = "descriptor") -> Descriptor:
        """Read a descriptor from outside JSON, checking every field's type and shape.

        Raises InputError naming ``what`` and the field; never KeyError or TypeError."""
        if not isinstance(d, dict):
            raise InputError(f"{what} is {type_name(d)}, not a descriptor object")
        media_type = d.get("mediaType")
        if not isinstance(media_type, str) or not MEDIA_TYPE_RE.fullmatch(media_type):
            raise InputError(f"{what}: mediaType {_shown(media_type)} is not a media type")
        digest = d.get("digest")
        if not isinstance(digest, str) or not ANY_DIGEST_RE.fullmatch(digest):
            raise InputError(f"{what}: digest {_shown(digest)} is not an OCI digest")
        size = d.get("size")
        # bool is an int in Python, not in JSON
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InputError(f"{what}: size {_shown(size)} is not a non-negative integer")
        annotations = d.get("annotations")
        if annotations is None:
            annotations = {}
        if not isinstance(annotations, dict) or not all(
                isinstance(v, str) for v in annotations.values()):
            raise InputError(f"{what}: annotations must map strings to strings")
        artifact_type = d.get("artifactType")
        if artifact_type is not None and not isinstance(artifact_type, str):
            raise InputError(f"{what}: artifactType {_shown(artifact_type)} is not a string")
        return cls(media_type=media_type, digest=digest, size=size,
                   annotations=dict(annotations), artifact_type=artifact_type or None)


# RFC 6838 type/subtype, with parameters (the bundle's ";version=0.3")
MEDIA_TYPE_RE = re.compile(r"[A-Za-z0-9][\w!#$&^.+-]{0,126}/[A-Za-z0-9][\w!#$&^.+-]{0,126}"
                           r"(?:\s*;\s*[\w.+-]+=[\w.+-]+)*")


def _shown(value: Any) -> str:
    """A value from outside, cut short for a message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Store(Protocol):
    """One repository in an OCI registry, or one OCI image-layout directory or archive."""

    def describe(self) -> str:
        """A human name for error messages (``oci:/path`` or ``host/repo``)."""
        ...

    def resolve(self, reference: str) -> str | None:
        """Manifest digest for a tag or digest; None when the tag does not exist."""
        ...

    def get_manifest(self, reference: str) -> tuple[bytes, str, str]:
        """(raw bytes, media type, digest). Bytes are checked against the digest."""
        ...

    def put_manifest(self, data: bytes, media_type: str, tag: str | None = None) -> str:
        """Store a manifest (and point ``tag`` at it); returns its digest. No retag checks here."""
        ...

    def has_blob(self, digest: str) -> bool: ...

    def put_blob_file(self, path: Path, digest: str, size: int,
                      progress: ProgressFn | None = None) -> bool:
        """Upload a file as a blob, streamed; False when it was already there."""
        ...

    def put_blob_bytes(self, data: bytes) -> str:
        """Upload a small blob held in memory; returns its digest."""
        ...

    def open_blob(self, digest: str, size: int | None, *, read_ahead: int = 0) -> BlobStream:
        """The blob as a stream of pieces, checked (see :class:`BlobStream`)."""
        ...

    def fetch_blob(self, digest: str, size: int | None, out: BinaryIO,
                   progress: ProgressFn | None = None) -> None:
        """Stream a blob into ``out``, checking size and digest; raises DigestMismatchError."""
        ...

    def get_blob_bytes(self, digest: str, max_size: int = MAX_SMALL_BLOB) -> bytes:
        """A small blob, checked against its digest."""
        ...

    def list_tags(self) -> list[str]: ...

    def referrers_api(self, subject_digest: str) -> list[Descriptor] | None:
        """Referrers from the registry's referrers API; None where the backend has none."""
        ...


def check_bytes(data: bytes, digest: str, what: str) -> bytes:
    """``data`` when it is the content of ``digest``; DigestMismatchError naming ``what``
    otherwise. The check for blobs and manifests held in memory."""
    got = sha256_bytes(data)
    if got != digest:
        raise DigestMismatchError(f"{what} does not match its digest {digest}: its "
                                  f"{len(data)} bytes hash to {got}")
    return data


PARALLEL_HASH_MIN = 64 << 20
"""Blobs at least this large are hashed on a thread of their own (:class:`_ThreadHasher`)
when their source hands out immutable pieces: receiving, hashing and writing (the consumer's
part) then use separate cores. SHA-256 runs at about 1.3 GiB/s per core, as fast as a
loopback download: inline, it would be the whole difference to ``curl -o``."""
PARALLEL_HASH_DEPTH = 4
"""Pieces (4 MiB from a registry) that may wait for the hashing thread."""


class _Hasher:
    """SHA-256 of the pieces, in the caller's thread."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def update(self, piece: Chunk) -> None:
        self._h.update(piece)

    def hexdigest(self) -> str:
        return self._h.hexdigest()

    def close(self) -> None:
        pass


class _ThreadHasher:
    """SHA-256 of immutable pieces on a thread of its own (hashlib releases the GIL), at most
    ``PARALLEL_HASH_DEPTH`` pieces behind. ``hexdigest`` waits for the last piece."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(PARALLEL_HASH_DEPTH)
        self._thread = threading.Thread(target=self._run, name="modelseal-hash", daemon=True)
        self._thread.start()
        self._closed = False

    def _run(self) -> None:
        while (piece := self._queue.get()) is not None:
            self._h.update(piece)

    def update(self, piece: Chunk) -> None:
        self._queue.put(piece if isinstance(piece, bytes) else bytes(piece))

    def hexdigest(self) -> str:
        self.close()
        return self._h.hexdigest()

    def close(self) -> None:
        """Stop the thread once it hashed what is queued (it never blocks: it only hashes)."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()


class BlobStream:
    """Pieces of a blob, checked against its ``digest`` and ``size`` as they pass: the one
    streaming check of modelseal.

    The piece that completes the blob is handed out only after the whole matched, so a
    consumer (a file being written, a registry receiving an upload) never gets all of content
    that is not the blob: DigestMismatchError is raised instead. Too many bytes are refused as
    soon as they arrive. Without a ``size`` the stream reads one piece ahead to check the end
    before the last piece leaves. Memory: the piece in hand (and the one read ahead), and for
    a large blob up to ``PARALLEL_HASH_DEPTH`` pieces waiting for the hashing thread.
    """

    def __init__(self, chunks: Iterable[Chunk], digest: str, size: int | None,
                 what: str) -> None:
        if not DIGEST_RE.match(digest):
            raise StoreError(f"unsupported digest {digest[:80]!r} (modelseal reads sha256 "
                             "only)")
        if size is not None and size < 0:
            raise StoreError(f"blob {digest} cannot have a negative size ({size})")
        self.digest, self.size, self.what = digest, size, what
        self._chunks = chunks
        self._run: Generator[Chunk, None, None] | None = None
        self.pos = 0
        self.finished = False

    def __iter__(self) -> Iterator[Chunk]:
        if self._run is not None:
            raise StoreError(f"{self.what} was read already: a stream cannot be read twice")
        self._run = self._pieces()
        return self._run

    def close(self) -> None:
        """Stop reading: the source is closed (a download thread stops at its next piece)."""
        if self._run is not None:
            self._run.close()
        else:
            _close(self._chunks)

    def _pieces(self) -> Generator[Chunk, None, None]:
        it = iter(self._chunks)
        try:
            yield from (self._sized(it) if self.size is not None else self._unsized(it))
        finally:
            _close(it)

    def _mismatch(self, got: str) -> DigestMismatchError:
        return DigestMismatchError(
            f"{self.what} does not match its digest {self.digest}: its {self.pos} bytes hash "
            f"to {got}")

    def _sized(self, it: Iterator[Chunk]) -> Iterator[Chunk]:
        size = self.size
        assert size is not None
        h: _Hasher | _ThreadHasher = _Hasher()
        if size == 0:
            self._end(it, h)
            return
        try:
            for chunk in it:
                n = len(chunk)
                if not n:
                    continue
                if self.pos + n > size:
                    raise DigestMismatchError(f"{self.what} is longer than the {size} bytes "
                                              "its descriptor says")
                if not self.pos and size >= PARALLEL_HASH_MIN and isinstance(chunk, bytes):
                    h = _ThreadHasher()  # large, and pieces that are never reused
                h.update(chunk)
                self.pos += n
                if self.pos == size:
                    # the source may reuse its buffer while we look past it
                    last = chunk if isinstance(chunk, bytes) else bytes(chunk)
                    self._end(it, h)
                    yield last
                    return
                yield chunk
        finally:
            h.close()
        raise DigestMismatchError(f"{self.what} ended after {self.pos} bytes; its descriptor "
                                  f"says {size}")

    def _unsized(self, it: Iterator[Chunk]) -> Iterator[Chunk]:
        h = _Hasher()
        held: bytes | None = None
        for chunk in it:
            if not len(chunk):
                continue
            if held is not None:
                yield held
            held = bytes(chunk)  # read ahead: a copy, the source may reuse its buffer
            h.update(held)
            self.pos += len(held)
        self._end(it, h)
        if held is not None:
            yield held

    def _end(self, it: Iterator[Chunk], h: _Hasher | _ThreadHasher) -> None:
        """Check the end: nothing more to come, and the digest."""
        if self.size is not None and any(len(extra) for extra in it):
            raise DigestMismatchError(f"{self.what} is longer than the {self.size} bytes its "
                                      "descriptor says")
        got = "sha256:" + h.hexdigest()
        if got != self.digest:
            raise self._mismatch(got)
        self.finished = True


def _close(chunks: object) -> None:
    """Close a source of chunks that can be closed (a generator, a file)."""
    close = getattr(chunks, "close", None)
    if close is not None:
        close()


def read_chunks(f: Any, chunk: int = 4 * 1024 * 1024) -> Iterator[memoryview]:
    """The content of ``f`` (anything with ``readinto``) in pieces, one buffer reused."""
    buf = bytearray(chunk)
    view = memoryview(buf)
    while True:
        n = f.readinto(buf)
        if not n:
            return
        yield view[:n]


_END = object()


def prefetch(chunks: Iterable[Chunk], blocks: int, name: str) -> Generator[bytes, None, None]:
    """``chunks`` read by a thread up to ``blocks`` pieces ahead, so reading them (a download)
    and using them (an upload) overlap in constant memory. The reader's errors are raised
    here; closing the generator stops the reader at its next piece. While waiting, Ctrl-C,
    the deadline and a failed sibling (``network.check_limits``) still stop the consumer."""
    q: queue.Queue[object] = queue.Queue(maxsize=max(1, blocks))
    stop = threading.Event()

    def put(item: object) -> None:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise network.Interrupted()  # the consumer went away: end the read

    def run() -> None:
        it = iter(chunks)
        try:
            for chunk in it:
                put(chunk if isinstance(chunk, bytes) else bytes(chunk))
        except BaseException as e:  # handed to the consumer, which raises it
            with contextlib.suppress(BaseException):
                put(e)
            return
        finally:
            with contextlib.suppress(BaseException):
                _close(it)
        with contextlib.suppress(BaseException):
            put(_END)

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    try:
        while True:
            try:
                item = q.get(timeout=0.2)
            except queue.Empty:
                network.check_limits()  # a slow reader must not make us deaf to a stop
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes)
            yield item
    finally:
        stop.set()
        t.join(timeout=5.0)  # a read blocked in the network ends at its next block


class BlobStore:
    """The base of every backend: the Store methods that hand bytes out, each checking them
    once (:class:`BlobStream`, :func:`check_bytes`). A backend supplies ``describe`` and the
    raw reads below; it never hands out bytes any other way."""

    cache_manifests = False
    """Keep small checked manifests (content-addressed, so never stale): for backends where a
    read is cheap enough that hashing again would dominate (image layouts)."""
    _manifest_cache: dict[str, tuple[bytes, str, str]] | None = None
    _manifest_cache_bytes = 0

    def describe(self) -> str:
        """A human name for error messages."""
        raise NotImplementedError

    def resolve(self, reference: str) -> str | None:
        """Manifest digest for a tag or digest; None when the tag does not exist."""
        raise NotImplementedError

    # -- what a backend supplies: raw reads, not checked -----------------------------------

    def _read_blob(self, digest: str, size: int | None) -> Iterator[Chunk]:
        """The stored bytes of blob ``digest``, in pieces (a piece may be reused by the
        next one); NotFoundError when absent. Not checked: the caller checks."""
        raise NotImplementedError

    def _read_small_blob(self, digest: str, max_size: int) -> bytes:
        """The stored bytes of blob ``digest`` in memory, refused (StoreError) beyond
        ``max_size``. Not checked. The default collects :meth:`_read_blob`."""
        parts: list[bytes] = []
        total = 0
        for chunk in self._read_blob(digest, None):
            total += len(chunk)
            if total > max_size:
                raise StoreError(f"blob {digest} in {self.describe()} is larger than "
                                 f"{max_size} bytes; refusing to hold it in memory")
            parts.append(bytes(chunk))
        return b"".join(parts)

    def _read_manifest(self, reference: str) -> tuple[bytes, str, str | None]:
        """(stored bytes, media type as stored or announced, the digest the backend says
        they have, or None) of the manifest a tag or digest names. Not checked. The default
        reads a digest's blob."""
        return self._read_small_blob(reference, MAX_SMALL_BLOB), "", reference

    def _check_manifest(self, data: bytes, media_type: str, what: str) -> str:
        """Read checked manifest bytes as a document; returns its media type."""
        return media_type

    # -- what the base hands out: checked ----------------------------------------------------

    def open_blob(self, digest: str, size: int | None, *, read_ahead: int = 0) -> BlobStream:
        """Blob ``digest`` as a checked stream of pieces. ``read_ahead``: pieces a thread
        reads ahead (a download overlapping its consumer); 0 reads as the consumer asks."""
        chunks: Iterable[Chunk] = self._read_blob(digest, size) if DIGEST_RE.match(digest) \
            else ()
        if read_ahead > 0:
            chunks = prefetch(chunks, read_ahead, f"modelseal-read-{digest[7:19]}")
        return BlobStream(chunks, digest, size, f"blob {digest} in {self.describe()}")

    def fetch_blob(self, digest: str, size: int | None, out: BinaryIO,
                   progress: ProgressFn | None = None) -> None:
        """Stream blob ``digest`` into ``out``; DigestMismatchError when it is not ``size``
        bytes that hash to ``digest`` (the last piece is then never written)."""
        for piece in self.open_blob(digest, size):
            out.write(piece)
            if progress is not None:
                progress(len(piece))

    def get_blob_bytes(self, digest: str, max_size: int = MAX_SMALL_BLOB) -> bytes:
        """A small blob in memory, checked against its digest."""
        if not DIGEST_RE.match(digest):
            raise StoreError(f"unsupported digest {digest[:80]!r} (modelseal reads sha256 "
                             "only)")
        return check_bytes(self._read_small_blob(digest, max_size), digest,
                           f"blob {digest} in {self.describe()}")

    def get_manifest(self, reference: str) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of the manifest a tag or digest names; the bytes are
        checked against the digest asked for, else the one the backend names."""
        pinned = DIGEST_RE.match(reference) is not None
        if self.cache_manifests and self._manifest_cache is not None:
            key = reference if pinned else self.resolve(reference)
            hit = self._manifest_cache.get(key) if key is not None else None
            if hit is not None:
                return hit
        data, media_type, claimed = self._read_manifest(reference)
        what = f"manifest {self.describe()}{'@' if pinned else ':'}{reference}"
        digest = sha256_bytes(data)
        expected = reference if pinned else claimed
        if expected and expected.startswith("sha256:") and expected != digest:
            raise DigestMismatchError(f"{what} does not match its digest {expected}: its "
                                      f"{len(data)} bytes hash to {digest}")
        media_type = self._check_manifest(data, media_type, what)
        if (self.cache_manifests and len(data) <= MAX_MANIFEST_CACHE_ITEM
                and self._manifest_cache_bytes + len(data) <= MAX_MANIFEST_CACHE_BYTES):
            # Content-addressed and checked: the same digest always names these bytes.
            # Listing referrers and then fetching them reads each manifest twice otherwise.
            if self._manifest_cache is None:
                self._manifest_cache = {}
            self._manifest_cache[digest] = (data, media_type, digest)
            self._manifest_cache_bytes += len(data)
        return data, media_type, digest
