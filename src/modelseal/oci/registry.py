"""A repository in an OCI registry, as a :class:`~modelseal.oci.store.Store`.

Built on oras-py's ``Registry`` (its session and cookie policy), extended in ONE place,
:class:`_OrasRegistry`, for what oras-py 0.2.43 lacks:

- authentication: Basic and Bearer token challenges told apart (a Basic realm is not a token
  URL), credentials from the caller or the Docker config / credential helpers, and the
  ``Authorization`` header sent up front once known, so a large upload never meets a 401
  mid-body; ``~/.docker/config.json`` is never written;
- one retry policy: what can heal is retried with exponential backoff (connection resets,
  5xx, 429 honouring ``Retry-After``); what cannot is not (unknown host, connection refused,
  TLS failures, timeouts: a registry silent for ``--timeout`` seconds has had its chance);
- a connect and read timeout on every request and an optional deadline on the whole command
  (:mod:`modelseal._util.network`); Ctrl-C/SIGTERM shut down open connections so worker
  threads stop at once, and abandoned upload sessions are cancelled (DELETE);
- registry answers parsed defensively: bounded size and JSON nesting, typed descriptors,
  bounded pagination that refuses loops and links to other hosts;
- errors mapped onto modelseal's hierarchy (AuthError, NotFoundError,
  RegistryUnreachableError ...), with messages naming the registry;
- request bodies produced by a factory, so a request can be replayed after a challenge.

The store itself adds what the protocol needs: uploads streamed from the file in constant
memory (monolithic POST+PUT or chunked PATCH, ``auto`` falling back to chunked when the
registry refuses), HEAD to skip existing blobs, cross-repository mounts, and every blob and
manifest checked against its digest while it streams in.

Transport: plain HTTP for ``localhost``, ``127.0.0.1`` and ``::1`` (as docker does), HTTPS
for every other host unless ``insecure=True``; ``ca_file`` for private TLS.

Threads: one ``requests.Session`` (keep-alive, a pool of 16 connections) is shared. The
store keeps no per-request state and guards its authentication state with a lock, so blob
transfers (``fetch_blob``, ``put_blob_file``, ``has_blob``) may run from several threads at
once on one store.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import os
import random
import socket
import ssl
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import oras.provider
import requests
import requests.adapters
import urllib3
import urllib3.connection
import urllib3.exceptions

from modelseal._util import network
from modelseal.errors import (
    AuthError,
    DigestMismatchError,
    InputError,
    NotFoundError,
    RegistryTimeoutError,
    RegistryUnreachableError,
    StoreError,
    TagConflictError,
    UsageError,
)
from modelseal.formats import INDEX_V1, MANIFEST_TYPES
from modelseal.oci.auth import (
    LOGIN_HINT,
    Challenge,
    Credentials,
    docker_credentials,
    parse_challenge,
)
from modelseal.oci.parse import (
    MAX_ERROR_BYTES,
    check_manifest,
    loads_json,
    parse_error_body,
    parse_index,
    parse_tag_list,
)
from modelseal.oci.store import Descriptor, ProgressFn
from modelseal.refs import DIGEST_RE, Ref

MiB = 1024 * 1024
UploadMode = Literal["auto", "monolithic", "chunked"]

ACCEPT_MANIFESTS = ", ".join(MANIFEST_TYPES)
MAX_MANIFEST_SIZE = 16 * MiB

IO_BLOCK = 4 * MiB  # read and send size: few syscalls, constant memory
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REFUSED_MONOLITHIC = frozenset({405, 411, 413, 501})
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
MAX_RETRY_AFTER = 60.0  # a registry asking us to wait longer is treated as down
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


def host_name(host: str) -> str:
    """``127.0.0.1:5000`` -> ``127.0.0.1``; ``[::1]:5000`` -> ``::1``."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    return host_name(host) in LOOPBACK_HOSTS


class Stopped(StoreError):
    """A transfer stopped because another part of the same operation failed (see
    :func:`stop_when`); the operation reports that first failure, not this."""


_SCOPE = threading.local()


@contextlib.contextmanager
def stop_when(event: threading.Event) -> Iterator[None]:
    """While in this block, this thread's registry requests and transfers stop (``Stopped``)
    before each request and between blocks once ``event`` is set: the workers of a push, pull
    or copy stop promptly when one of their siblings failed (upload sessions cancelled)."""
    previous = getattr(_SCOPE, "event", None)
    _SCOPE.event = event
    try:
        yield
    finally:
        _SCOPE.event = previous


def _check_stopped() -> None:
    event = getattr(_SCOPE, "event", None)
    if event is not None and event.is_set():
        raise Stopped("stopped: another transfer of this operation failed")


def check_limits() -> None:
    """For a thread waiting on something other than a registry (a queue fed by a download):
    stop when interrupted, past the deadline, or when a sibling failed (:func:`stop_when`)."""
    network.check_cancelled()
    _check_stopped()
    left = network.limits().remaining()
    if left is not None and left <= 0:
        raise RegistryTimeoutError(f"gave up: the command ran past its deadline of "
                                   f"{network.limits().deadline:g} s",
                                   hint="raise --deadline (MODELSEAL_DEADLINE)")


class _Transient(StoreError):
    """A failure worth retrying (connection lost, 5xx) in a request that was not retried."""


def _failure_reason(exc: BaseException) -> str:
    """A short human reason for a requests/urllib3 exception chain."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    text = str(exc)
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {e.verify_message}"
        if isinstance(e, ssl.SSLError) and e.reason:
            return f"TLS error: {e.reason}"
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, ConnectionResetError):
            return "connection reset by the registry"
        if isinstance(e, BrokenPipeError):
            return "connection closed by the registry"
        if isinstance(e, TimeoutError):
            return "timed out"
        nxt = [e.__cause__, e.__context__, getattr(e, "reason", None),
               *[a for a in e.args if isinstance(a, BaseException)]]
        todo.extend(x for x in nxt if isinstance(x, BaseException))
    low = text.lower()
    for needle, reason in (("connection refused", "connection refused"),
                           ("name or service not known", "unknown host"),
                           ("nodename nor servname", "unknown host"),
                           ("temporary failure in name resolution", "unknown host"),
                           ("timed out", "timed out"),
                           ("connection aborted", "connection closed by the registry"),
                           ("connection reset", "connection reset by the registry")):
        if needle in low:
            return reason
    return text[:200]


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it wraps (cause, context, ``reason``, args)."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        nxt = [e.__cause__, e.__context__, getattr(e, "reason", None),
               *[a for a in e.args if isinstance(a, BaseException)]]
        todo.extend(x for x in nxt if isinstance(x, BaseException))


FailureKind = Literal["timeout", "dns", "refused", "transient"]


def classify_failure(exc: BaseException) -> FailureKind:
    """Can retrying heal this? Resets and dropped connections may; an unknown host, a refused
    connection or a registry that stayed silent for the whole timeout do not."""
    chain = list(_chain(exc))
    for e in chain:
        if isinstance(e, (urllib3.exceptions.NameResolutionError, socket.gaierror)):
            return "dns"
        if isinstance(e, ConnectionRefusedError):
            return "refused"
    for e in chain:
        # urllib3's NewConnectionError subclasses ConnectTimeoutError: not a timeout
        if isinstance(e, urllib3.exceptions.NewConnectionError):
            continue
        if isinstance(e, (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)):
            return "timeout"
    low = str(exc).lower()
    if any(n in low for n in ("name or service not known", "nodename nor servname",
                              "temporary failure in name resolution")):
        return "dns"
    if "connection refused" in low:
        return "refused"
    if "timed out" in low:
        return "timeout"
    return "transient"


# -- parsing headers (the JSON parsers are in modelseal.oci.parse) -------------------------------

def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), or None."""
    if not value:
        return None
    v = value.strip()
    if v.isascii() and v.isdigit():
        return float(min(int(v[:12]), 10**9))
    try:
        when = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    try:
        ts = when.timestamp()
    except (OverflowError, OSError, ValueError):
        return None
    return max(0.0, ts - (time.time() if now is None else now))


def next_page(link: str | None, current: str) -> str | None:
    """The ``rel="next"`` URL of a ``Link`` header, resolved against ``current``; refused
    when it points at another scheme or host (our credentials would follow it)."""
    if not link:
        return None
    try:
        links = requests.utils.parse_header_links(link[:8192])
    except (ValueError, IndexError):
        raise StoreError("the registry sent an unreadable Link header") from None
    nxt = next((x.get("url") for x in links
                if isinstance(x, dict) and "next" in str(x.get("rel", "")).split()), None)
    if not nxt:
        return None
    try:
        url = urllib.parse.urljoin(current, nxt.strip())
        here, there = urllib.parse.urlsplit(current), urllib.parse.urlsplit(url)
    except ValueError:
        raise StoreError("the registry sent an unreadable next-page link") from None
    if (there.scheme, there.netloc) != (here.scheme, here.netloc):
        raise StoreError(f"the registry's next-page link points at another server "
                         f"({there.scheme}://{there.netloc}): refused")
    return url


def _registry_errors(resp: requests.Response) -> tuple[list[str], str]:
    """(error codes, readable message) from an OCI error body, if any (read capped)."""
    data = b""
    try:
        if getattr(resp, "_content_consumed", True):
            data = resp.content or b""
        elif resp.raw is not None:
            data = resp.raw.read(MAX_ERROR_BYTES, decode_content=True) or b""
    except Exception:  # an unreadable error body is just no detail
        data = b""
    return parse_error_body(data)


# -- connections that Ctrl-C can shut down -------------------------------------------------------

_LIVE: weakref.WeakSet[urllib3.connection.HTTPConnection] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


class _TrackedHTTPConnection(urllib3.connection.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        with _LIVE_LOCK:
            _LIVE.add(self)


class _TrackedHTTPSConnection(urllib3.connection.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        with _LIVE_LOCK:
            _LIVE.add(self)


class _TrackedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection


class _TrackedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


class _Adapter(requests.adapters.HTTPAdapter):
    """requests' adapter whose connections are remembered, so :func:`network.cancel` can shut
    their sockets: a worker blocked in a read then wakes at once instead of after its read
    timeout."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _TrackedHTTPPool,
                                                   "https": _TrackedHTTPSPool}


def _shutdown_connections() -> None:
    with _LIVE_LOCK:
        conns = list(_LIVE)
    for conn in conns:
        sock = getattr(conn, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError, ValueError):
                # the plain socket's shutdown, also under TLS: it wakes a blocked SSL read
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


network.add_closer(_shutdown_connections)


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
    """A blob arriving as chunks of any size, handed out in order and hashed as it passes.

    The size and digest are checked before the last byte leaves, so a registry never gets
    the whole of content that does not hash to its digest. Memory: the chunk in hand."""

    def __init__(self, chunks: Iterable[bytes | bytearray | memoryview], digest: str,
                 size: int, what: str, check: Callable[[], None],
                 sent: Callable[[int], None] | None) -> None:
        self.it = iter(chunks)
        self.digest, self.size, self.what = digest, size, what
        self.check, self.sent = check, sent
        self.pending = memoryview(b"")
        self.pos = 0
        self.h = hashlib.sha256()
        self.finished = False

    def finish(self) -> None:
        if len(self.pending) or any(len(extra) for extra in self.it):
            raise DigestMismatchError(f"{self.what} is longer than the {self.size} bytes "
                                      "its descriptor says")
        actual = "sha256:" + self.h.hexdigest()
        if actual != self.digest:
            raise DigestMismatchError(f"{self.what} hashes to {actual}, not {self.digest}")
        self.finished = True

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
            self.h.update(piece)
            self.pos += len(piece)
            left -= len(piece)
            if self.pos == self.size:
                self.finish()  # before the last piece is sent
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


class _OrasRegistry(oras.provider.Registry):  # type: ignore[misc]
    """oras-py's Registry with modelseal's transport: the one place oras-py is extended."""

    def __init__(self, host: str, *, scheme: str, verify: bool | str,
                 credentials: Credentials | None, docker_config: str | None,
                 retries: int, timeout: float | None = None, backoff: float = 0.25) -> None:
        super().__init__(hostname=host, insecure=(scheme == "http"), tls_verify=verify,
                         auth_backend="basic")
        self.host = host
        self.retries = max(1, retries)
        self.timeout = timeout
        self.backoff = max(0.0, backoff)
        self._explicit = credentials
        self._docker_config = docker_config
        self._creds_loaded = credentials is not None
        self._creds = credentials
        self._authz: str | None = None
        self._lock = threading.Lock()
        self.http: requests.Session = self.session
        adapter = _Adapter(pool_connections=4, pool_maxsize=16, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = "modelseal"
        # requests re-reads proxy settings and CA variables from the environment on every
        # request (~0.5 ms each: a third of a small request). Read them once, here.
        base = f"{scheme}://{host}/"
        self.session.proxies.update(requests.utils.get_environ_proxies(base))
        env_ca = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if verify is True and env_ca:
            self._tls_verify = env_ca
        self.session.trust_env = False

    # -- credentials and challenges ---------------------------------------------------------

    def credentials(self) -> Credentials | None:
        """Explicit credentials, else the Docker config's (read once, lazily)."""
        with self._lock:
            if not self._creds_loaded:
                cfg = Path(self._docker_config) if self._docker_config else None
                self._creds = docker_credentials(self.host, cfg)
                self._creds_loaded = True
            return self._creds

    def _missing(self) -> AuthError:
        return AuthError(f"registry {self.host} requires authentication and no credentials "
                         "were found for it", hint=LOGIN_HINT.format(host=self.host))

    def _refused(self, creds: Credentials) -> AuthError:
        return AuthError(f"registry {self.host} refused the credentials of user "
                         f"{creds.username!r} (from {creds.source})",
                         hint="check the username and password, or log in again with "
                              f"`docker login {self.host}`")

    def _authenticate(self, challenge: Challenge | None, failed: str | None) -> None:
        """Answer a 401: set the Authorization header to send from now on."""
        creds = self.credentials()
        with self._lock:
            if self._authz is not None and self._authz != failed:
                return  # another thread answered the challenge meanwhile
            if challenge is None or challenge.scheme == "basic":
                if creds is None or creds.identity_token:
                    raise self._missing()
                if failed is not None and failed.startswith("Basic "):
                    raise self._refused(creds)
                self._authz = creds.basic()
                return
            if challenge.scheme != "bearer":
                raise AuthError(f"registry {self.host} asks for {challenge.scheme!r} "
                                "authentication, which modelseal does not support")
        token = self._fetch_token(challenge, creds)
        with self._lock:
            self._authz = f"Bearer {token}"

    def _fetch_token(self, ch: Challenge, creds: Credentials | None) -> str:
        realm = ch.realm
        if not realm or not realm.startswith(("https://", "http://")):
            raise AuthError(f"registry {self.host} sent a Bearer challenge without a token "
                            f"URL (realm={realm!r})")
        params = {k: v for k, v in (("service", ch.params.get("service")),
                                    ("scope", ch.params.get("scope"))) if v}
        try:
            if creds is not None and creds.identity_token:
                resp = self.session.post(realm, data={
                    "grant_type": "refresh_token", "refresh_token": creds.identity_token,
                    "client_id": "modelseal", **params}, timeout=self.timeouts(),
                    verify=self._tls_verify, stream=True)
            else:
                headers = {"Authorization": creds.basic()} if creds is not None else {}
                resp = self.session.get(realm, params=params, headers=headers,
                                        timeout=self.timeouts(), verify=self._tls_verify,
                                        stream=True)
        except requests.exceptions.SSLError as e:
            if network.cancelled():
                raise network.Interrupted() from e
            raise RegistryUnreachableError(
                f"TLS verification failed for the token service {realm} of registry "
                f"{self.host}: {_failure_reason(e)}") from e
        except requests.RequestException as e:
            if network.cancelled():
                raise network.Interrupted() from e
            cls = (RegistryTimeoutError if classify_failure(e) == "timeout"
                   else RegistryUnreachableError)
            raise cls(f"cannot reach the token service {realm} of registry {self.host}: "
                      f"{_failure_reason(e)}") from e
        if resp.status_code != 200:
            resp.close()
        if resp.status_code in (401, 403):
            raise self._refused(creds) if creds is not None else self._missing()
        if resp.status_code != 200:
            raise AuthError(f"token service {realm} of registry {self.host} answered "
                            f"HTTP {resp.status_code}")
        try:
            with resp:  # a token answer is small: read at most 1 MiB of it
                body = resp.raw.read(MiB + 1, decode_content=True) or b""
            data = loads_json(body[:MiB], "token answer") if len(body) <= MiB else None
            token = (data.get("token") or data.get("access_token")
                     if isinstance(data, dict) else None)
        except (StoreError, requests.RequestException, urllib3.exceptions.HTTPError,
                OSError):
            token = None
        if not token or not isinstance(token, str):
            raise AuthError(f"token service {realm} of registry {self.host} sent no token")
        return str(token)

    # -- requests -----------------------------------------------------------------------------

    def timeouts(self) -> tuple[float, float]:
        """(connect, read) timeouts for the next request, cut to what the deadline leaves."""
        lim = network.limits()
        t = self.timeout if self.timeout and self.timeout > 0 else lim.timeout
        left = lim.remaining()
        if left is not None:
            if left <= 0:
                raise RegistryTimeoutError(
                    f"gave up on registry {self.host}: the command ran past its deadline of "
                    f"{lim.deadline:g} s", hint="raise --deadline (MODELSEAL_DEADLINE)")
            t = min(t, left)
        return (t, t)

    def check_limits(self) -> None:
        """Between blocks of a transfer: stop when interrupted, past the deadline, or when a
        sibling transfer failed (:func:`stop_when`)."""
        network.check_cancelled()
        _check_stopped()
        left = network.limits().remaining()
        if left is not None and left <= 0:
            self.timeouts()  # raises the deadline error

    def timeout_error(self, what: str, exc: BaseException | None = None) -> RegistryTimeoutError:
        """The error for a registry that went silent for the whole connect/read timeout."""
        lim = network.limits()
        left = lim.remaining()
        if left is not None and left <= 0.05:
            return RegistryTimeoutError(
                f"gave up on registry {self.host} ({what}): the command ran past its deadline "
                f"of {lim.deadline:g} s", hint="raise --deadline (MODELSEAL_DEADLINE)")
        t = self.timeout if self.timeout and self.timeout > 0 else lim.timeout
        connect = exc is not None and any(
            isinstance(e, (requests.exceptions.ConnectTimeout,
                           urllib3.exceptions.ConnectTimeoutError)) for e in _chain(exc))
        how = "did not accept a connection" if connect else "stopped answering"
        return RegistryTimeoutError(
            f"registry {self.host} {how} for {t:g} s ({what}): gave up",
            hint="check the registry; a slow network may need a larger --timeout "
                 "(MODELSEAL_TIMEOUT); see docs/network.md")

    def current_authorization(self) -> str | None:
        """The Authorization header value in use, if any."""
        with self._lock:
            return self._authz

    def _send(self, method: str, url: str, headers: dict[str, str],
              body: BodyFactory | None, stream: bool) -> requests.Response:
        h = dict(headers)
        with self._lock:
            authz = self._authz
        if authz is not None:
            h["Authorization"] = authz
        resp = self.http.request(method, url, headers=h, data=body() if body else None,
                                 stream=stream, timeout=self.timeouts(),
                                 verify=self._tls_verify, allow_redirects=True)
        if resp.status_code != 401:
            return resp
        challenge = parse_challenge(resp.headers.get("WWW-Authenticate"))
        resp.close()
        self._authenticate(challenge, authz)
        with self._lock:
            h["Authorization"] = self._authz or ""
        resp = self.http.request(method, url, headers=h, data=body() if body else None,
                                 stream=stream, timeout=self.timeouts(),
                                 verify=self._tls_verify)
        if resp.status_code == 401:
            resp.close()
            creds = self.credentials()
            raise self._refused(creds) if creds is not None else self._missing()
        return resp

    def do_request(self, url: str, method: str = "GET", data: Any = None,
                   headers: dict[str, str] | None = None, json: Any = None,
                   stream: bool = False, *, body: BodyFactory | None = None,
                   retry: bool = True) -> requests.Response:
        """One request with authentication and, when ``retry``, bounded retries.

        ``body`` makes a fresh request body for each attempt. With ``retry=False`` a transient
        failure raises ``_Transient`` for the caller to restart a larger operation.
        """
        if body is None and data is not None:
            payload = data

            def body() -> Any:
                return payload
        if json is not None:
            raise TypeError("pass JSON as bytes")
        attempts = self.retries if retry else 1
        delay = self.backoff
        path = urllib.parse.urlsplit(url).path
        for attempt in range(attempts):
            last = attempt + 1 >= attempts
            network.check_cancelled()
            _check_stopped()
            try:
                resp = self._send(method, url, headers or {}, body, stream)
            except requests.exceptions.SSLError as e:
                if network.cancelled():
                    raise network.Interrupted() from e
                raise RegistryUnreachableError(
                    f"TLS verification failed for registry {self.host}: "
                    f"{_failure_reason(e)}",
                    hint="pass --ca-file with the CA bundle that signed the registry's "
                         "certificate") from e
            except requests.RequestException as e:
                if network.cancelled():
                    raise network.Interrupted() from e
                if not isinstance(e, (requests.ConnectionError, requests.Timeout,
                                      requests.exceptions.ChunkedEncodingError,
                                      requests.exceptions.ContentDecodingError)):
                    raise StoreError(f"request {method} {path} to registry {self.host} "
                                     f"failed: {_failure_reason(e)}") from e
                kind = classify_failure(e)
                if kind == "timeout":
                    raise self.timeout_error(f"{method} {path}", e) from e
                if kind in ("dns", "refused"):
                    # does not heal by retrying: say so at once, not after 8 s of backoff
                    raise RegistryUnreachableError(
                        f"cannot reach registry {self.host}: {_failure_reason(e)}",
                        hint="is the registry running and is the address right?") from e
                if not retry:
                    raise _Transient(f"lost the connection to registry {self.host}: "
                                     f"{_failure_reason(e)}") from e
                if last:
                    raise RegistryUnreachableError(
                        f"cannot reach registry {self.host}: {_failure_reason(e)}",
                        hint=f"gave up after {attempts} attempts; is the registry running "
                             "and is the address right?") from e
                network.sleep(delay * (1 + random.random() / 2))
                delay *= 2
                continue
            if resp.status_code in RETRY_STATUSES:
                wait = delay * (1 + random.random() / 2)
                asked = parse_retry_after(resp.headers.get("Retry-After"))
                if asked is not None:
                    left = network.limits().remaining()
                    if asked > MAX_RETRY_AFTER or (left is not None and asked > left):
                        resp.close()
                        raise RegistryUnreachableError(
                            f"registry {self.host} answered HTTP {resp.status_code} to "
                            f"{method} {path} and asks to retry after {asked:.0f} s: gave up",
                            hint="the registry is rate-limiting or down for maintenance; "
                                 "run the command again later")
                    wait = asked
                if not retry:
                    resp.close()
                    raise _Transient(f"registry {self.host} answered HTTP "
                                     f"{resp.status_code} to {method} {path}")
                if not last:
                    resp.close()
                    network.sleep(wait)
                    delay *= 2
                    continue
            return resp
        raise AssertionError("unreachable")

    def error(self, resp: requests.Response, what: str) -> StoreError:
        """The modelseal error for an unexpected response."""
        _, msg = _registry_errors(resp)
        detail = f"HTTP {resp.status_code}" + (f": {msg}" if msg else "")
        if resp.status_code == 404:
            return NotFoundError(f"{what}: not found on registry {self.host} ({detail})")
        if resp.status_code in (401, 403):
            return AuthError(f"registry {self.host} denied {what} ({detail})",
                             hint="check that your account may read/write this repository")
        if resp.status_code in RETRY_STATUSES:
            return RegistryUnreachableError(
                f"registry {self.host} kept failing on {what} ({detail})")
        if resp.status_code == 400 and self._speaks_https(resp):
            return RegistryUnreachableError(
                f"registry {self.host} speaks HTTPS, but modelseal used plain HTTP "
                "(the default for localhost/127.0.0.1)",
                hint="pass --ca-file with the registry's CA certificate to use HTTPS")
        return StoreError(f"registry {self.host} refused {what} ({detail})")

    def _speaks_https(self, resp: requests.Response) -> bool:
        """Did a plain-HTTP request reach a TLS port? (Go answers 400 with this text.)"""
        marker = b"HTTP request to an HTTPS server"
        if not resp.url.startswith("http://"):
            return False
        if marker in (resp.content or b""):
            return True
        try:  # a HEAD answer has no body: ask once more with GET
            probe = self.http.get(f"http://{self.host}/v2/",
                                  timeout=min(5.0, self.timeouts()[1]))
            return marker in probe.content[:MAX_ERROR_BYTES]
        except requests.RequestException:
            return False

    def _check_200_response(self, response: requests.Response) -> None:
        if response.status_code not in (200, 201, 202):
            raise self.error(response, f"{response.request.method} {response.request.url}")


class RegistryStore:
    """One repository of an OCI registry (see the module docstring for transport and threads)."""

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
        if insecure is None:
            scheme = "http" if is_loopback(host) and not ca_file else "https"
        else:
            scheme = "http" if insecure else "https"
        self.scheme = scheme
        self.upload_mode: UploadMode = upload_mode
        self.chunk_size = chunk_size
        self.retries = max(1, retries)
        self.mount_from = tuple(mount_from)
        self._refuses_monolithic = False
        creds = (Credentials(username, password, "the command line")
                 if username is not None and password is not None else None)
        self._reg = _OrasRegistry(host, scheme=scheme, verify=ca_file or True,
                                  credentials=creds, docker_config=docker_config,
                                  retries=self.retries, timeout=timeout, backoff=backoff)
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
        self._reg.session.close()

    # -- manifests ----------------------------------------------------------------------------

    def resolve(self, reference: str) -> str | None:
        resp = self._reg.do_request(self._url(f"manifests/{reference}"), "HEAD",
                                    headers={"Accept": ACCEPT_MANIFESTS})
        resp.close()
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise self._reg.error(resp, f"resolving {self.describe()}:{reference}")
        digest = resp.headers.get("Docker-Content-Digest")
        if not digest or not DIGEST_RE.match(digest):
            return self.get_manifest(reference)[2]
        if DIGEST_RE.match(reference) and digest != reference:
            raise DigestMismatchError(
                f"registry {self.host} answered {digest} for manifest {reference} "
                f"in {self.repository}")
        return digest

    def get_manifest(self, reference: str) -> tuple[bytes, str, str]:
        what = f"manifest {self.describe()}{'@' if DIGEST_RE.match(reference) else ':'}{reference}"
        resp = self._reg.do_request(self._url(f"manifests/{reference}"), "GET",
                                    headers={"Accept": ACCEPT_MANIFESTS}, stream=True)
        with resp:
            if resp.status_code != 200:
                raise self._reg.error(resp, what)
            h = hashlib.sha256()
            parts: list[bytes] = []
            total = 0
            try:
                for chunk in resp.iter_content(256 * 1024):
                    self._reg.check_limits()
                    total += len(chunk)
                    if total > MAX_MANIFEST_SIZE:
                        raise StoreError(f"{what} is larger than {MAX_MANIFEST_SIZE} bytes; "
                                         "refusing it")
                    h.update(chunk)
                    parts.append(chunk)
            except requests.RequestException as e:
                raise self._stream_error(e, f"reading {what}") from e
            ctype = resp.headers.get("Content-Type", "").split(";")[0].strip()
            header_digest = resp.headers.get("Docker-Content-Digest")
        data = b"".join(parts)
        digest = "sha256:" + h.hexdigest()
        expected = reference if DIGEST_RE.match(reference) else header_digest
        if expected and expected.startswith("sha256:") and expected != digest:
            raise DigestMismatchError(
                f"{what} from registry {self.host} hashes to {digest}, not {expected}")
        doc = loads_json(data, f"{what} from registry {self.host}")
        if not isinstance(doc, dict):
            raise StoreError(f"{what} from registry {self.host} is not a JSON object")
        check_manifest(doc, f"{what} from registry {self.host}")
        if ctype not in MANIFEST_TYPES:
            ctype = self._media_type_from_json(doc, what, ctype)
        return data, ctype, digest

    def _stream_error(self, e: BaseException, what: str) -> StoreError:
        """The error for a body that stopped arriving (interrupt, timeout, lost connection)."""
        if network.cancelled():
            raise network.Interrupted() from e
        if classify_failure(e) == "timeout":
            return self._reg.timeout_error(what, e)
        return RegistryUnreachableError(f"lost registry {self.host} while {what}: "
                                        f"{_failure_reason(e)}")

    def _read_capped(self, resp: requests.Response, limit: int, what: str) -> bytes:
        """The body of a streamed answer, refused beyond ``limit`` bytes."""
        parts: list[bytes] = []
        total = 0
        try:
            for chunk in resp.iter_content(256 * 1024):
                self._reg.check_limits()
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
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        ref = tag if tag is not None else digest
        delay = max(0.05, self._reg.backoff / 2)
        for attempt in range(MANIFEST_PUT_ATTEMPTS):
            resp = self._reg.do_request(self._url(f"manifests/{ref}"), "PUT", data=data,
                                        headers={"Content-Type": media_type})
            resp.close()
            if resp.status_code in (200, 201):
                got = resp.headers.get("Docker-Content-Digest")
                if got and got.startswith("sha256:") and got != digest:
                    raise DigestMismatchError(f"registry {self.host} stored manifest {ref} as "
                                              f"{got}, but its bytes hash to {digest}")
                return digest
            codes, _ = _registry_errors(resp)
            if (resp.status_code == 400 and BLOB_UNKNOWN & set(codes)
                    and attempt + 1 < MANIFEST_PUT_ATTEMPTS):
                network.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 2.0)
                continue
            raise self._reg.error(resp, f"storing manifest {self.describe()}:{ref}")
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
        digest = "sha256:" + hashlib.sha256(data).hexdigest()

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
        resp = self._reg.do_request(self._url(f"manifests/{digest}"), "DELETE")
        resp.close()
        if resp.status_code not in (200, 202):
            raise self._reg.error(resp, f"deleting manifest {self.describe()}@{digest}")

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
            resp = self._reg.do_request(url, "GET", headers=headers, stream=True)
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
                raise self._reg.error(resp, what)
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
                raise self._reg.error(resp, what)
            found, _ = parse_index(self._read_capped(resp, MAX_LIST_BYTES, "a referrers index"),
                                   f"referrers index of {subject_digest} on {self.host}")
            out.extend(found)
            if len(out) > self.max_referrers:
                raise StoreError(f"registry {self.host} listed more than {self.max_referrers} "
                                 f"referrers of {subject_digest}: refused")
        return out

    # -- blobs: reading -----------------------------------------------------------------------

    def has_blob(self, digest: str) -> bool:
        resp = self._reg.do_request(self._url(f"blobs/{digest}"), "HEAD")
        resp.close()
        if resp.status_code == 200:
            return True
        if resp.status_code == 404:
            return False
        raise self._reg.error(resp, f"checking blob {digest}")

    def fetch_blob(self, digest: str, size: int | None, out: BinaryIO,
                   progress: ProgressFn | None = None, *, verify: bool = True) -> None:
        """Stream a blob into ``out``, hashing as it comes; resumes with Range after a drop.

        ``verify=False`` skips the hash (sizes are still checked): only for a consumer that
        checks the digest itself before anything depends on the bytes, as
        :meth:`put_blob_stream` does (a copy then hashes each byte once, not twice)."""
        if not DIGEST_RE.match(digest):
            raise StoreError(f"unsupported digest {digest!r} (modelseal reads sha256 only)")
        h = hashlib.sha256() if verify else None
        got = 0
        url = self._url(f"blobs/{digest}")
        drops = 0
        while True:
            headers = {"Range": f"bytes={got}-"} if got else {}
            resp = self._reg.do_request(url, "GET", headers=headers, stream=True)
            try:
                if resp.status_code not in (200, 206):
                    raise self._reg.error(resp, f"blob {digest} of {self.describe()}")
                skip = got if resp.status_code == 200 else 0
                length = resp.headers.get("Content-Length", "")
                if size is not None and resp.status_code == 200 and length.isdigit():
                    announced = int(length)
                    if announced != size:
                        raise DigestMismatchError(
                            f"blob {digest} on registry {self.host} is {announced} bytes, "
                            f"the manifest says {size}")
                for chunk in resp.iter_content(IO_BLOCK):
                    self._reg.check_limits()
                    if skip:
                        cut = min(skip, len(chunk))
                        chunk, skip = chunk[cut:], skip - cut
                        if not chunk:
                            continue
                    got += len(chunk)
                    if size is not None and got > size:
                        raise DigestMismatchError(
                            f"blob {digest} on registry {self.host} is longer than the "
                            f"{size} bytes the manifest says")
                    if h is not None:
                        h.update(chunk)
                    out.write(chunk)
                    if progress is not None:
                        progress(len(chunk))
                break
            except requests.RequestException as e:
                # a dropped connection resumes with Range; a stall or an interrupt ends here
                if (network.cancelled() or classify_failure(e) != "transient"
                        or isinstance(e, requests.exceptions.SSLError)):
                    raise self._stream_error(e, f"downloading blob {digest}") from e
                drops += 1
                if drops >= self.retries:
                    raise RegistryUnreachableError(
                        f"lost registry {self.host} while downloading blob {digest}: "
                        f"{_failure_reason(e)}") from e
                network.sleep(self._reg.backoff * 2 * drops)
            finally:
                resp.close()
        if size is not None and got != size:
            raise DigestMismatchError(f"blob {digest} on registry {self.host} is {got} bytes, "
                                      f"the manifest says {size}")
        if h is None:
            return
        actual = "sha256:" + h.hexdigest()
        if actual != digest:
            raise DigestMismatchError(
                f"blob {digest} from registry {self.host} ({self.repository}) hashes to "
                f"{actual}: the registry served different content")

    def get_blob_bytes(self, digest: str, max_size: int = 64 * MiB) -> bytes:
        import io

        buf = io.BytesIO()

        class _Capped:
            def write(self, b: bytes) -> int:
                if buf.tell() + len(b) > max_size:
                    raise StoreError(f"blob {digest} is larger than {max_size} bytes; "
                                     "refusing to hold it in memory")
                return buf.write(b)

        self.fetch_blob(digest, None, _Capped(), None)  # type: ignore[arg-type]
        return buf.getvalue()

    # -- blobs: writing -----------------------------------------------------------------------

    def put_blob_bytes(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
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
            return _FileBody(path, off, n, sent if report else None, self._reg.check_limits)

        sources = self.mount_from if mount_from is None else mount_from
        self._with_restarts(digest, lambda: self._upload_once(
            digest, size, body, path, sources, self.upload_mode))
        return True

    def put_blob_stream(self, chunks: Iterable[bytes | bytearray | memoryview], digest: str,
                        size: int, progress: ProgressFn | None = None, *,
                        check: Callable[[], None] | None = None) -> bool:
        """Upload blob ``digest`` of ``size`` bytes from ``chunks`` as they come (a download
        from another registry), in constant memory; False, with ``chunks`` untouched, when
        the registry has it already.

        Size and digest are checked while streaming, before the last byte is sent
        (DigestMismatchError). Monolithic or chunked as the store's upload mode says (``auto``:
        monolithic, chunked from then on when the registry refuses it). On any failure the
        upload session is cancelled. A failure a fresh stream may heal (a dropped connection)
        raises :class:`UploadRestart`: ``chunks`` was consumed, so restarting is the caller's.
        ``progress`` receives the number of bytes sent; ``check`` runs between pieces (besides
        Ctrl-C and the deadline) and may raise to stop the upload.
        """
        if not DIGEST_RE.match(digest):
            raise StoreError(f"unsupported digest {digest!r} (modelseal writes sha256 only)")
        if size < 0:
            raise StoreError(f"blob {digest} cannot have a negative size ({size})")
        if self.has_blob(digest):
            return False

        def checks() -> None:
            self._reg.check_limits()
            if check is not None:
                check()

        source = _StreamSource(chunks, digest, size, f"the stream of blob {digest}", checks,
                               progress)
        if size == 0:
            source.finish()  # nothing will be taken: check the (empty) stream now
        mode: UploadMode = "chunked" if self._refuses_monolithic else self.upload_mode
        try:
            self._upload_once(digest, size, lambda off, n, _r: _StreamBody(source, off, n),
                              None, (), mode)
        except _Transient as e:
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
        resp = self._reg.do_request(url, "POST", headers={"Content-Length": "0"})
        resp.close()
        if resp.status_code == 201:
            return True
        if resp.status_code == 202 and resp.headers.get("Location"):
            self._cancel(self._location(resp, f"an upload of {digest}"))
        return False

    def _with_restarts(self, digest: str, once: Callable[[], None]) -> None:
        delay = max(self._reg.backoff, 0.01) * 2
        for attempt in range(self.retries):
            try:
                once()
                return
            except _Transient as e:
                if attempt + 1 >= self.retries:
                    raise RegistryUnreachableError(
                        f"uploading blob {digest} to {self.describe()} failed: {e.message}",
                        hint=f"gave up after {self.retries} attempts; run the command again "
                             "when the registry is back") from e
                network.sleep(delay)
                delay *= 2

    def _start_upload(self, digest: str, sources: tuple[str, ...]) -> str | None:
        """POST an upload session (trying mounts first); None when a mount made the blob."""
        for src in sources:
            if src == self.repository:
                continue
            url = self._url("blobs/uploads/?" + urllib.parse.urlencode(
                {"mount": digest, "from": src}))
            resp = self._reg.do_request(url, "POST", headers={"Content-Length": "0"})
            resp.close()
            if resp.status_code == 201:
                return None
            if resp.status_code == 202:
                return self._location(resp, f"an upload of {digest}")
            # anything else: mount not possible here, start a plain upload
        resp = self._reg.do_request(self._url("blobs/uploads/"), "POST",
                                    headers={"Content-Length": "0"})
        resp.close()
        if resp.status_code != 202:
            raise self._reg.error(resp, f"starting an upload of {digest} to {self.describe()}")
        return self._location(resp, f"an upload of {digest}")

    def _finish(self, resp: requests.Response, digest: str, path: Path | None) -> None:
        if resp.status_code in (200, 201):
            got = resp.headers.get("Docker-Content-Digest")
            if got and got.startswith("sha256:") and got != digest:
                raise DigestMismatchError(f"registry {self.host} stored {got} instead of "
                                          f"{digest}")
            return
        codes, _ = _registry_errors(resp)
        if "DIGEST_INVALID" in codes or "SIZE_INVALID" in codes:
            what = str(path) if path else "the data"
            raise DigestMismatchError(
                f"registry {self.host} found that {what} does not hash to {digest}",
                hint="the file changed after it was hashed; run the command again")
        raise self._reg.error(resp, f"uploading blob {digest} to {self.describe()}")

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
            resp = self._reg.do_request(url, "PUT", headers=octet,
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
            resp = self._reg.do_request(location, "PATCH", headers=headers,
                                        body=lambda off=off, n=n: body(off, n, True),  # type: ignore[misc]
                                        retry=False)
            resp.close()
            if resp.status_code != 202:
                raise self._reg.error(resp, f"uploading a chunk of blob {digest}")
            location = session[0] = self._location(resp, f"the upload of {digest}")
            start += n
        resp = self._reg.do_request(_add_query(location, digest=digest), "PUT",
                                    headers={**octet, "Content-Length": "0"}, retry=False)
        resp.close()
        self._finish(resp, digest, path)

    def _cancel(self, location: str) -> None:
        """DELETE an upload session; best effort, a short timeout, even after Ctrl-C."""
        headers: dict[str, str] = {}
        authz = self._reg.current_authorization()
        if authz:
            headers["Authorization"] = authz
        with contextlib.suppress(Exception):
            self._reg.http.request("DELETE", location, headers=headers, timeout=(1.0, 2.0),
                                   verify=self._reg._tls_verify).close()


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
