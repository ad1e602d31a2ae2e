"""A repository in an OCI registry, as a :class:`~modelseal.oci.store.Store`: the
distribution API (manifests, blobs, tags, referrers, upload sessions, mounts) over the HTTP
transport of :mod:`modelseal.oci._transport` (session, TLS, authentication, the one retry
policy). The bytes it hands out are checked by the store base (:class:`BlobStore`).

What the store adds to the protocol: uploads streamed from the file in constant memory
(monolithic POST+PUT or chunked PATCH, ``auto`` falling back to chunked when the registry
refuses), HEAD to skip existing blobs, cross-repository mounts, downloads resumed with
``Range`` after a dropped connection, abandoned upload sessions cancelled (DELETE), and
registry answers parsed defensively: bounded size and JSON nesting, typed descriptors,
bounded pagination that refuses loops and links to other hosts.

Threads: the store keeps no per-request state, so blob transfers (``fetch_blob``,
``put_blob_file``, ``has_blob``) may run from several threads at once on one store.
"""

from __future__ import annotations

import contextlib
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import requests

from modelseal._util import network
from modelseal.digest import sha256_bytes
from modelseal.errors import (
    DigestMismatchError,
    InputError,
    RegistryUnreachableError,
    StoreError,
    TagConflictError,
    UsageError,
)
from modelseal.formats import INDEX_V1, MANIFEST_TYPES
from modelseal.oci._transport import (
    RetryPolicy,
    Transient,
    Transport,
    classify_failure,
    error_details,
    failure_reason,
    next_page,
    scheme_for,
)
from modelseal.oci.auth import Credentials
from modelseal.oci.parse import (
    check_manifest,
    loads_json,
    parse_index,
    parse_tag_list,
)
from modelseal.oci.store import (
    BlobStore,
    BlobStream,
    Chunk,
    Descriptor,
    ProgressFn,
)
from modelseal.refs import DIGEST_RE, Ref

MiB = 1024 * 1024
UploadMode = Literal["auto", "monolithic", "chunked"]

ACCEPT_MANIFESTS = ", ".join(MANIFEST_TYPES)
MAX_MANIFEST_SIZE = 16 * MiB

IO_BLOCK = 4 * MiB  # read and send size: few syscalls, constant memory
REFUSED_MONOLITHIC = frozenset({405, 411, 413, 501})
MAX_LIST_BYTES = 16 * MiB  # one page of a tag list or referrers index
MAX_LIST_PAGES = 1000
MAX_TAGS = 1_000_000
MAX_REFERRERS = 100_000
BLOB_UNKNOWN = frozenset({"BLOB_UNKNOWN", "MANIFEST_BLOB_UNKNOWN"})
MANIFEST_PUT_ATTEMPTS = 8  # a manifest PUT racing another writer's link of the same blob
TAG_SETTLE = 0.3  # seconds a guarded tag write waits before its second re-read


@dataclass(frozen=True)
class RegistryOptions:
    """How to talk to a registry; the CLI fills this from its flags.

    ``insecure``: None picks plain HTTP for loopback hosts only, True forces plain HTTP,
    False forces HTTPS. ``docker_config``: a config.json to read instead of the default.
    """

    insecure: bool | None = None
    ca_file: str | None = None
    username: str | None = None
    password: str | None = None
    upload_mode: UploadMode = "auto"
    chunk_size: int = 64 * MiB
    retries: int = 5
    docker_config: str | None = None
    mount_from: tuple[str, ...] = ()
    timeout: float | None = None  # None: network.limits().timeout (--timeout)
    backoff: float = 0.25  # first retry delay, doubled each time


def _add_query(url: str, **params: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query += list(params.items())
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


class _FileBody:
    """A request body read from ``path[offset:offset+length]`` in large blocks.

    ``__len__`` gives requests the Content-Length; iteration (not ``read``) makes urllib3
    send our large blocks as they are. One buffer is reused: memory stays constant.
    """

    def __init__(self, path: Path, offset: int, length: int,
                 sent: Callable[[int], None] | None,
                 check: Callable[[], None] = network.check_cancelled) -> None:
        self.path, self.offset, self.length, self.sent = path, offset, length, sent
        self.check = check

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[memoryview]:
        buf = bytearray(min(IO_BLOCK, max(self.length, 1)))
        view = memoryview(buf)
        pos, end = self.offset, self.offset + self.length
        with open(self.path, "rb", buffering=0) as f:
            f.seek(pos)
            while pos < end:
                self.check()  # Ctrl-C or the deadline stop an upload between blocks
                n = f.readinto(view[:min(len(buf), end - pos)])
                if not n:
                    raise InputError(f"{self.path} became shorter while it was being uploaded")
                yield view[:n]
                pos += n
                if self.sent is not None:
                    self.sent(pos)


class UploadRestart(StoreError):
    """A streamed upload failed in a way a fresh stream of the same blob may heal (the
    connection dropped, or the registry refused a monolithic upload and will now get chunks).
    The stream was consumed: the caller restarts it (:meth:`RegistryStore.put_blob_stream`)."""


class _StreamSource:
    """A checked blob stream (:class:`BlobStream`) handed out in pieces of the sizes the
    requests ask for. Memory: the piece in hand."""

    def __init__(self, stream: BlobStream, check: Callable[[], None],
                 sent: Callable[[int], None] | None) -> None:
        self.stream, self.what = stream, stream.what
        self.size = stream.size or 0
        self.it = iter(stream)
        self.check, self.sent = check, sent
        self.pending = memoryview(b"")
        self.pos = 0

    @property
    def finished(self) -> bool:
        """Every byte was taken and matched the digest."""
        return self.stream.finished

    def finish(self) -> None:
        """Read the stream to its end (its checks run there)."""
        for _ in self.it:
            raise DigestMismatchError(f"{self.what} is longer than the {self.size} bytes "
                                      "its descriptor says")

    def take(self, n: int) -> Iterator[memoryview]:
        """The next ``n`` bytes, in pieces."""
        left = n
        while left > 0:
            self.check()  # Ctrl-C, the deadline or a failed sibling stop it between pieces
            if not len(self.pending):
                try:
                    self.pending = memoryview(next(self.it)).cast("B")
                except StopIteration:
                    raise DigestMismatchError(
                        f"{self.what} ended after {self.pos} bytes; its descriptor says "
                        f"{self.size}") from None
                continue
            piece = self.pending[:left]
            self.pending = self.pending[len(piece):]
            self.pos += len(piece)
            left -= len(piece)
            yield piece
            if self.sent is not None:
                self.sent(len(piece))


class _StreamBody:
    """A request body of the next ``length`` bytes of a :class:`_StreamSource`; it cannot be
    sent twice (a replay after a challenge or a dropped connection restarts the stream)."""

    def __init__(self, source: _StreamSource, offset: int, length: int) -> None:
        self.source, self.offset, self.length = source, offset, length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[memoryview]:
        if self.source.pos != self.offset:
            raise UploadRestart(f"{self.source.what} was partly sent already and cannot be "
                                "sent again from a stream")
        return self.source.take(self.length)


BodyFactory = Callable[[], Any]


class RegistryStore(BlobStore):
    """One repository of an OCI registry (see the module docstring for threads)."""

    tags_page_size = 1000
    max_list_pages = MAX_LIST_PAGES
    max_tags = MAX_TAGS
    max_referrers = MAX_REFERRERS

    def __init__(self, host: str, repository: str, *, insecure: bool | None = None,
                 ca_file: str | None = None, username: str | None = None,
                 password: str | None = None, upload_mode: UploadMode = "auto",
                 chunk_size: int = 64 * MiB, retries: int = 5,
                 docker_config: str | None = None, mount_from: tuple[str, ...] = (),
                 timeout: float | None = None, backoff: float = 0.25) -> None:
        if upload_mode not in ("auto", "monolithic", "chunked"):
            raise UsageError(f"unknown upload mode {upload_mode!r}: auto, monolithic or chunked")
        if chunk_size < 1:
            raise UsageError("chunk size must be positive")
        if (username is None) != (password is None):
            raise UsageError(f"give both a username and a password for {host}, or neither")
        self.host = host
        self.repository = repository
        scheme = self.scheme = scheme_for(host, insecure, ca_file)
        self.upload_mode: UploadMode = upload_mode
        self.chunk_size = chunk_size
        self.retry = RetryPolicy(attempts=max(1, retries), backoff=max(0.0, backoff))
        self.mount_from = tuple(mount_from)
        self._refuses_monolithic = False
        creds = (Credentials(username, password, "the command line")
                 if username is not None and password is not None else None)
        self.transport = Transport(host, scheme=scheme, verify=ca_file or True,
                                   credentials=creds, docker_config=docker_config,
                                   retry=self.retry, timeout=timeout)
        # not oras.container.Container: it takes a first component with a dot for a host
        self._base = f"{scheme}://{host}/v2/{repository}"

    # -- names --------------------------------------------------------------------------------

    def describe(self) -> str:
        return f"{self.host}/{self.repository}"

    def _url(self, path: str) -> str:
        return f"{self._base}/{path}"

    def _location(self, resp: requests.Response, what: str) -> str:
        loc = resp.headers.get("Location")
        if not loc:
            raise StoreError(f"registry {self.host} started {what} without a Location header")
        return urllib.parse.urljoin(resp.url or f"{self.scheme}://{self.host}/", loc)

    def close(self) -> None:
        self.transport.session.close()

    # -- manifests ----------------------------------------------------------------------------

    def resolve(self, reference: str) -> str | None:
        resp = self.transport.do_request(self._url(f"manifests/{reference}"), "HEAD",
                                    headers={"Accept": ACCEPT_MANIFESTS})
        resp.close()
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise self.transport.error(resp, f"resolving {self.describe()}:{reference}")
        digest = resp.headers.get("Docker-Content-Digest")
        if not digest or not DIGEST_RE.match(digest):
            return self.get_manifest(reference)[2]
        if DIGEST_RE.match(reference) and digest != reference:
            raise DigestMismatchError(
                f"registry {self.host} answered {digest} for manifest {reference} "
                f"in {self.repository}")
        return digest

    def _read_manifest(self, reference: str) -> tuple[bytes, str, str | None]:
        what = f"manifest {self.describe()}{'@' if DIGEST_RE.match(reference) else ':'}{reference}"
        resp = self.transport.do_request(self._url(f"manifests/{reference}"), "GET",
                                         headers={"Accept": ACCEPT_MANIFESTS}, stream=True)
        with resp:
            if resp.status_code != 200:
                raise self.transport.error(resp, what)
            data = self._read_capped(resp, MAX_MANIFEST_SIZE, what)
            ctype = resp.headers.get("Content-Type", "").split(";")[0].strip()
            return data, ctype, resp.headers.get("Docker-Content-Digest")

    def _check_manifest(self, data: bytes, media_type: str, what: str) -> str:
        what = f"{what} from registry {self.host}"
        doc = loads_json(data, what)
        if not isinstance(doc, dict):
            raise StoreError(f"{what} is not a JSON object")
        check_manifest(doc, what)
        if media_type not in MANIFEST_TYPES:
            media_type = self._media_type_from_json(doc, what, media_type)
        return media_type

    def _stream_error(self, e: BaseException, what: str) -> StoreError:
        """The error for a body that stopped arriving (interrupt, timeout, lost connection)."""
        if network.cancelled():
            raise network.Interrupted() from e
        if classify_failure(e) == "timeout":
            return self.transport.timeout_error(what, e)
        return RegistryUnreachableError(f"lost registry {self.host} while {what}: "
                                        f"{failure_reason(e)}")

    def _read_capped(self, resp: requests.Response, limit: int, what: str) -> bytes:
        """The body of a streamed answer, refused beyond ``limit`` bytes."""
        parts: list[bytes] = []
        total = 0
        try:
            for chunk in resp.iter_content(256 * 1024):
                self.transport.check_limits()
                total += len(chunk)
                if total > limit:
                    raise StoreError(f"{what} from registry {self.host} is larger than {limit} "
                                     "bytes: refused")
                parts.append(chunk)
        except requests.RequestException as e:
            raise self._stream_error(e, f"reading {what}") from e
        return b"".join(parts)

    @staticmethod
    def _media_type_from_json(doc: dict[str, Any], what: str, ctype: str) -> str:
        mt = doc.get("mediaType")
        if isinstance(mt, str) and mt in MANIFEST_TYPES:
            return str(mt)
        shown = ctype or (mt[:100] if isinstance(mt, str) else None)
        raise StoreError(f"{what} has media type {shown!r}, which modelseal does not read "
                         f"(expected one of: {', '.join(MANIFEST_TYPES)})")

    def put_manifest(self, data: bytes, media_type: str, tag: str | None = None) -> str:
        """Store a manifest (under ``tag``, else its digest); returns the digest.

        A 400 "blob unknown" is retried with jittered backoff: when several writers upload
        the same blob (every referrer's empty config) the registry may briefly not see the
        blob a concurrent commit is linking, although it was uploaded.
        """
        digest = sha256_bytes(data)
        ref = tag if tag is not None else digest
        race = RetryPolicy(MANIFEST_PUT_ATTEMPTS, max(0.05, self.retry.backoff / 2), cap=2.0)
        for attempt in range(race.attempts):
            resp = self.transport.do_request(self._url(f"manifests/{ref}"), "PUT", data=data,
                                        headers={"Content-Type": media_type})
            resp.close()
            if resp.status_code in (200, 201):
                got = resp.headers.get("Docker-Content-Digest")
                if got and got.startswith("sha256:") and got != digest:
                    raise DigestMismatchError(f"registry {self.host} stored manifest {ref} as "
                                              f"{got}, but its bytes hash to {digest}")
                return digest
            codes, _ = error_details(resp)
            if (resp.status_code == 400 and BLOB_UNKNOWN & set(codes)
                    and attempt + 1 < race.attempts):
                race.pause(attempt)
                continue
            raise self.transport.error(resp, f"storing manifest {self.describe()}:{ref}")
        raise AssertionError("unreachable")

    def put_manifest_exclusive(self, data: bytes, media_type: str, tag: str, *,
                               same_content: Callable[[str], bool] | None = None) -> str:
        """Point ``tag`` at ``data`` unless another writer holds or takes it for other
        content; returns the digest the tag points at.

        The distribution API has no conditional tag update, so two pushes of different
        content to one tag both "succeed" and one is silently overwritten. This narrows the
        window to one round trip and detects a lost race: the tag is checked right before
        the PUT and re-read twice after it (at once, and after a pause longer than a
        competitor's check-then-PUT). A lost race raises TagConflictError naming both
        digests (exit 5). ``same_content(digest)`` says whether the manifest at ``digest``
        is the same model as ``data`` (the caller's judgement, e.g. the same layers and
        config, creation time aside, as ``transfer.check_tag`` judges): then two pushes at
        once are no conflict, and that digest is returned. Without it only identical bytes
        are the same. For a guarantee, enable the registry's tag immutability
        (docs/network.md).
        """
        digest = sha256_bytes(data)

        def same(other: str) -> bool:
            if same_content is None:
                return False
            try:
                return same_content(other)
            except (StoreError, InputError):
                return False  # unsure: a conflict

        before = self.resolve(tag)
        if before is not None and before != digest:
            if same(before):
                return before
            raise self._tag_conflict(tag, digest, before, "before this push wrote it")
        t0 = time.monotonic()
        self.put_manifest(data, media_type, tag)
        rtt = time.monotonic() - t0
        now: str | None = digest
        for pause in (0.0, min(2.0, max(TAG_SETTLE, 4 * rtt))):
            network.sleep(pause)
            now = self.resolve(tag)
            if now != digest and (now is None or not same(now)):
                raise self._tag_conflict(tag, digest, now, "right after this push wrote it")
        return now or digest

    def _tag_conflict(self, tag: str, mine: str, theirs: str | None,
                      when: str) -> TagConflictError:
        return TagConflictError(
            f"lost a race for tag {tag!r} in {self.describe()}: another writer moved it to "
            f"{theirs or 'nothing'} {when}; this push's manifest {mine} is stored but not "
            "tagged",
            hint="two pushes wrote this tag at once; push under a new tag, and enable the "
                 "registry's tag immutability (docs/network.md)")

    def delete_manifest(self, digest: str) -> None:
        """Delete a manifest by digest (registries need ``storage.delete.enabled``)."""
        resp = self.transport.do_request(self._url(f"manifests/{digest}"), "DELETE")
        resp.close()
        if resp.status_code not in (200, 202):
            raise self.transport.error(resp, f"deleting manifest {self.describe()}@{digest}")

    def _pages(self, first: str, what: str,
               headers: dict[str, str] | None = None) -> Iterator[requests.Response]:
        """Each page of a paginated listing, following ``Link: <...>; rel="next"`` within
        bounds: no URL twice (a self-pointing link), at most ``max_list_pages`` pages."""
        seen: set[str] = set()
        url: str | None = first
        while url is not None:
            if url in seen:
                raise StoreError(f"registry {self.host} sent a next-page link back to a page "
                                 f"already read while {what}: refused (pagination loop)")
            if len(seen) >= self.max_list_pages:
                raise StoreError(f"registry {self.host} sent more than {self.max_list_pages} "
                                 f"pages while {what}: refused")
            seen.add(url)
            resp = self.transport.do_request(url, "GET", headers=headers, stream=True)
            with resp:
                yield resp
                url = next_page(resp.headers.get("Link"), url) if resp.ok else None

    def list_tags(self) -> list[str]:
        tags: list[str] = []
        what = f"listing tags of {self.describe()}"
        for resp in self._pages(self._url(f"tags/list?n={self.tags_page_size}"), what):
            if resp.status_code == 404:
                return tags  # repository unknown: no tags
            if resp.status_code != 200:
                raise self.transport.error(resp, what)
            tags.extend(parse_tag_list(self._read_capped(resp, MAX_LIST_BYTES, "a tag list"),
                                       f"tag list of {self.describe()} on {self.host}"))
            if len(tags) > self.max_tags:
                raise StoreError(f"registry {self.host} listed more than {self.max_tags} tags "
                                 f"in {self.repository}: refused")
        return tags

    def referrers_api(self, subject_digest: str) -> list[Descriptor] | None:
        out: list[Descriptor] = []
        what = f"listing referrers of {subject_digest}"
        first = True
        for resp in self._pages(self._url(f"referrers/{subject_digest}"), what,
                                {"Accept": INDEX_V1}):
            if first and resp.status_code in (400, 404, 405, 501):
                return None  # no referrers API (distribution 2.8 answers 404)
            first = False
            if resp.status_code != 200:
                raise self.transport.error(resp, what)
            found, _ = parse_index(self._read_capped(resp, MAX_LIST_BYTES, "a referrers index"),
                                   f"referrers index of {subject_digest} on {self.host}")
            out.extend(found)
            if len(out) > self.max_referrers:
                raise StoreError(f"registry {self.host} listed more than {self.max_referrers} "
                                 f"referrers of {subject_digest}: refused")
        return out

    # -- blobs: reading -----------------------------------------------------------------------

    def has_blob(self, digest: str) -> bool:
        resp = self.transport.do_request(self._url(f"blobs/{digest}"), "HEAD")
        resp.close()
        if resp.status_code == 200:
            return True
        if resp.status_code == 404:
            return False
        raise self.transport.error(resp, f"checking blob {digest}")

    def _read_blob(self, digest: str, size: int | None) -> Iterator[Chunk]:
        """The blob as it downloads; a dropped connection resumes with Range (the retry
        policy's attempts and waits). A Content-Length other than ``size`` is refused before
        the body is read."""
        got = 0
        url = self._url(f"blobs/{digest}")
        drops = 0
        while True:
            headers = {"Range": f"bytes={got}-"} if got else {}
            resp = self.transport.do_request(url, "GET", headers=headers, stream=True)
            try:
                if resp.status_code not in (200, 206):
                    raise self.transport.error(resp, f"blob {digest} of {self.describe()}")
                skip = got if resp.status_code == 200 else 0
                length = resp.headers.get("Content-Length", "")
                if size is not None and resp.status_code == 200 and length.isdigit():
                    announced = int(length)
                    if announced != size:
                        raise DigestMismatchError(
                            f"blob {digest} on registry {self.host} is {announced} bytes, "
                            f"the manifest says {size}")
                for chunk in resp.iter_content(IO_BLOCK):
                    self.transport.check_limits()
                    if skip:
                        cut = min(skip, len(chunk))
                        chunk, skip = chunk[cut:], skip - cut
                        if not chunk:
                            continue
                    got += len(chunk)
                    yield chunk
                return
            except requests.RequestException as e:
                # a dropped connection resumes with Range; a stall or an interrupt ends here
                if (network.cancelled() or classify_failure(e) != "transient"
                        or isinstance(e, requests.exceptions.SSLError)):
                    raise self._stream_error(e, f"downloading blob {digest}") from e
                drops += 1
                if drops >= self.retry.attempts:
                    raise RegistryUnreachableError(
                        f"lost registry {self.host} while downloading blob {digest}: "
                        f"{failure_reason(e)}") from e
                self.retry.pause(drops - 1)
            finally:
                resp.close()

    # -- blobs: writing -----------------------------------------------------------------------

    def put_blob_bytes(self, data: bytes) -> str:
        digest = sha256_bytes(data)
        if self.has_blob(digest):
            return digest
        self._with_restarts(digest, lambda: self._upload_once(
            digest, len(data), lambda off, n, _sent: bytes(data[off:off + n]), None, (),
            "monolithic"))
        return digest

    def put_blob_file(self, path: Path, digest: str, size: int,
                      progress: ProgressFn | None = None, *,
                      mount_from: tuple[str, ...] | None = None) -> bool:
        """Upload ``path`` as blob ``digest``, streamed; False when it was already there.

        ``progress`` receives the number of new bytes sent (bytes resent after a restart are
        not counted twice). A mounted blob counts as uploaded (True), with no progress calls.
        """
        path = Path(path)
        try:
            actual = path.stat().st_size
        except OSError as e:
            raise InputError(f"cannot read {path}: {e.strerror or e}") from e
        if actual != size:
            raise InputError(f"{path} is {actual} bytes, but {size} were expected: it changed "
                             "after it was hashed")
        if self.has_blob(digest):
            return False
        high = [0]

        def sent(pos: int) -> None:
            if pos > high[0]:
                if progress is not None:
                    progress(pos - high[0])
                high[0] = pos

        def body(off: int, n: int, report: bool) -> Any:
            return _FileBody(path, off, n, sent if report else None, self.transport.check_limits)

        sources = self.mount_from if mount_from is None else mount_from
        self._with_restarts(digest, lambda: self._upload_once(
            digest, size, body, path, sources, self.upload_mode))
        return True

    def put_blob_stream(self, chunks: Iterable[Chunk], digest: str, size: int,
                        progress: ProgressFn | None = None, *,
                        check: Callable[[], None] | None = None) -> bool:
        """Upload blob ``digest`` of ``size`` bytes from ``chunks`` as they come (a download
        from another store), in constant memory; False, with ``chunks`` untouched, when the
        registry has it already.

        Size and digest are checked while streaming, before the last byte is sent
        (DigestMismatchError): ``chunks`` is read through a :class:`BlobStream`, or is one
        already (``Store.open_blob`` of the source: each byte is then hashed once). Monolithic
        or chunked as the store's upload mode says (``auto``: monolithic, chunked from then
        on when the registry refuses it). On any failure the upload session is cancelled. A
        failure a fresh stream may heal (a dropped connection) raises :class:`UploadRestart`:
        ``chunks`` was consumed, so restarting is the caller's. ``progress`` receives the
        number of bytes sent; ``check`` runs between pieces (besides Ctrl-C and the deadline)
        and may raise to stop the upload.
        """
        if not DIGEST_RE.match(digest):
            raise StoreError(f"unsupported digest {digest!r} (modelseal writes sha256 only)")
        if size < 0:
            raise StoreError(f"blob {digest} cannot have a negative size ({size})")
        if self.has_blob(digest):
            return False

        def checks() -> None:
            self.transport.check_limits()
            if check is not None:
                check()

        stream = (chunks if isinstance(chunks, BlobStream) and chunks.digest == digest
                  and chunks.size == size
                  else BlobStream(chunks, digest, size, f"the stream of blob {digest}"))
        source = _StreamSource(stream, checks, progress)
        if size == 0:
            source.finish()  # nothing will be taken: check the (empty) stream now
        mode: UploadMode = "chunked" if self._refuses_monolithic else self.upload_mode
        try:
            self._upload_once(digest, size, lambda off, n, _r: _StreamBody(source, off, n),
                              None, (), mode)
        except Transient as e:
            raise UploadRestart(f"uploading blob {digest} to {self.describe()} failed: "
                                f"{e.message}") from e
        if not source.finished:  # a registry answering 201 before it had every byte
            raise StoreError(f"registry {self.host} accepted blob {digest} after "
                             f"{source.pos} of {size} bytes: refused")
        return True

    def mount_blob(self, digest: str, from_repo: str) -> bool:
        """Ask the registry to link blob ``digest`` from repository ``from_repo`` (same
        registry) into this one, without sending it; True when it did. An upload session
        the registry opens instead is cancelled."""
        if from_repo == self.repository or not DIGEST_RE.match(digest):
            return False
        url = self._url("blobs/uploads/?" + urllib.parse.urlencode(
            {"mount": digest, "from": from_repo}))
        resp = self.transport.do_request(url, "POST", headers={"Content-Length": "0"})
        resp.close()
        if resp.status_code == 201:
            return True
        if resp.status_code == 202 and resp.headers.get("Location"):
            self._cancel(self._location(resp, f"an upload of {digest}"))
        return False

    def _with_restarts(self, digest: str, once: Callable[[], None]) -> None:
        for attempt in range(self.retry.attempts):
            try:
                once()
                return
            except Transient as e:
                if attempt + 1 >= self.retry.attempts:
                    raise RegistryUnreachableError(
                        f"uploading blob {digest} to {self.describe()} failed: {e.message}",
                        hint=f"gave up after {self.retry.attempts} attempts; run the command "
                             "again when the registry is back") from e
                self.retry.pause(attempt)

    def _start_upload(self, digest: str, sources: tuple[str, ...]) -> str | None:
        """POST an upload session (trying mounts first); None when a mount made the blob."""
        for src in sources:
            if src == self.repository:
                continue
            url = self._url("blobs/uploads/?" + urllib.parse.urlencode(
                {"mount": digest, "from": src}))
            resp = self.transport.do_request(url, "POST", headers={"Content-Length": "0"})
            resp.close()
            if resp.status_code == 201:
                return None
            if resp.status_code == 202:
                return self._location(resp, f"an upload of {digest}")
            # anything else: mount not possible here, start a plain upload
        resp = self.transport.do_request(self._url("blobs/uploads/"), "POST",
                                    headers={"Content-Length": "0"})
        resp.close()
        if resp.status_code != 202:
            raise self.transport.error(resp, f"starting an upload of {digest} to {self.describe()}")
        return self._location(resp, f"an upload of {digest}")

    def _finish(self, resp: requests.Response, digest: str, path: Path | None) -> None:
        if resp.status_code in (200, 201):
            got = resp.headers.get("Docker-Content-Digest")
            if got and got.startswith("sha256:") and got != digest:
                raise DigestMismatchError(f"registry {self.host} stored {got} instead of "
                                          f"{digest}")
            return
        codes, _ = error_details(resp)
        if "DIGEST_INVALID" in codes or "SIZE_INVALID" in codes:
            what = str(path) if path else "the data"
            raise DigestMismatchError(
                f"registry {self.host} found that {what} does not hash to {digest}",
                hint="the file changed after it was hashed; run the command again")
        raise self.transport.error(resp, f"uploading blob {digest} to {self.describe()}")

    def _upload_once(self, digest: str, size: int,
                     body: Callable[[int, int, bool], Any], path: Path | None,
                     sources: tuple[str, ...], mode: UploadMode) -> None:
        location = self._start_upload(digest, sources)
        if location is None:
            return
        session = [location]
        try:
            self._upload_session(session, digest, size, body, path, mode)
        except BaseException:
            # failed, timed out or interrupted: cancel the session, or the registry keeps
            # what was sent so far (up to the whole blob) until its upload purging runs
            self._cancel(session[0])
            raise

    def _upload_session(self, session: list[str], digest: str, size: int,
                        body: Callable[[int, int, bool], Any], path: Path | None,
                        mode: UploadMode) -> None:
        location = session[0]
        octet = {"Content-Type": "application/octet-stream"}
        if mode in ("auto", "monolithic"):
            url = _add_query(location, digest=digest)
            resp = self.transport.do_request(url, "PUT", headers=octet,
                                        body=lambda: body(0, size, True), retry=False)
            resp.close()
            if mode == "auto" and resp.status_code in REFUSED_MONOLITHIC:
                self._refuses_monolithic = True  # streams cannot fall back mid-way: next time
                self._cancel(location)
                self._upload_once(digest, size, body, path, (), "chunked")
                return
            self._finish(resp, digest, path)
            return
        start = 0
        while start < size:
            n = min(self.chunk_size, size - start)
            headers = {**octet, "Content-Range": f"{start}-{start + n - 1}"}
            off = start
            resp = self.transport.do_request(location, "PATCH", headers=headers,
                                        body=lambda off=off, n=n: body(off, n, True),  # type: ignore[misc]
                                        retry=False)
            resp.close()
            if resp.status_code != 202:
                raise self.transport.error(resp, f"uploading a chunk of blob {digest}")
            location = session[0] = self._location(resp, f"the upload of {digest}")
            start += n
        resp = self.transport.do_request(_add_query(location, digest=digest), "PUT",
                                    headers={**octet, "Content-Length": "0"}, retry=False)
        resp.close()
        self._finish(resp, digest, path)

    def _cancel(self, location: str) -> None:
        """DELETE an upload session; best effort, a short timeout, even after Ctrl-C."""
        headers: dict[str, str] = {}
        authz = self.transport.current_authorization()
        if authz:
            headers["Authorization"] = authz
        with contextlib.suppress(Exception):
            self.transport.http.request("DELETE", location, headers=headers, timeout=(1.0, 2.0),
                                   verify=self.transport.tls_verify).close()


def open_registry_store(ref: Ref, options: RegistryOptions | None = None) -> RegistryStore:
    """The store for a registry reference (``HOST[:PORT]/REPO...``)."""
    if ref.kind != "registry":
        raise UsageError(f"{ref} is not a registry reference")
    o = options or RegistryOptions()
    return RegistryStore(ref.location, ref.repository, insecure=o.insecure, ca_file=o.ca_file,
                         username=o.username, password=o.password, upload_mode=o.upload_mode,
                         chunk_size=o.chunk_size, retries=o.retries,
                         docker_config=o.docker_config, mount_from=o.mount_from,
                         timeout=o.timeout, backoff=o.backoff)
