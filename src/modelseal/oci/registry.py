"""A repository in an OCI registry, as a :class:`~modelseal.oci.store.Store`.

Built on oras-py's ``Registry`` (its session and cookie policy), extended in ONE place,
:class:`_OrasRegistry`, for what oras-py 0.2.43 lacks:

- authentication: Basic and Bearer token challenges told apart (a Basic realm is not a token
  URL), credentials from the caller or the Docker config / credential helpers, and the
  ``Authorization`` header sent up front once known, so a large upload never meets a 401
  mid-body; ``~/.docker/config.json`` is never written;
- bounded retries with exponential backoff on connection errors, 429 and 5xx;
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
import hashlib
import os
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import oras.provider
import requests
import requests.adapters

from modelseal._util.json import loads_object as load_json_object
from modelseal.errors import (
    AuthError,
    DigestMismatchError,
    InputError,
    NotFoundError,
    RegistryUnreachableError,
    StoreError,
    UsageError,
)
from modelseal.oci.auth import (
    LOGIN_HINT,
    Challenge,
    Credentials,
    docker_credentials,
    parse_challenge,
)
from modelseal.oci.store import INDEX_V1, MANIFEST_V1, Descriptor, ProgressFn
from modelseal.refs import DIGEST_RE, Ref

MiB = 1024 * 1024
UploadMode = Literal["auto", "monolithic", "chunked"]

DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (MANIFEST_V1, INDEX_V1, DOCKER_MANIFEST_V2, DOCKER_MANIFEST_LIST)
ACCEPT_MANIFESTS = ", ".join(MANIFEST_TYPES)
MAX_MANIFEST_SIZE = 16 * MiB

IO_BLOCK = 4 * MiB  # read and send size: few syscalls, constant memory
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REFUSED_MONOLITHIC = frozenset({405, 411, 413, 501})
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
TIMEOUT = (15.0, 300.0)  # connect, read


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


def host_name(host: str) -> str:
    """``127.0.0.1:5000`` -> ``127.0.0.1``; ``[::1]:5000`` -> ``::1``."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    return host_name(host) in LOOPBACK_HOSTS


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


def _registry_errors(resp: requests.Response) -> tuple[list[str], str]:
    """(error codes, readable message) from an OCI error body, if any."""
    try:
        body = load_json_object(resp.content, what="error body", max_bytes=1 << 20)
        errs = body.get("errors") or []
    except InputError:
        errs = []
    if not isinstance(errs, list):
        errs = []
    codes = [str(e.get("code", "")) for e in errs if isinstance(e, dict)]
    msgs = []
    for e in errs:
        if isinstance(e, dict):
            m = str(e.get("message") or e.get("code") or "")
            if e.get("detail"):
                m += f" ({e['detail']})"
            msgs.append(m)
    return codes, "; ".join(msgs)


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
                 sent: Callable[[int], None] | None) -> None:
        self.path, self.offset, self.length, self.sent = path, offset, length, sent

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[memoryview]:
        buf = bytearray(min(IO_BLOCK, max(self.length, 1)))
        view = memoryview(buf)
        pos, end = self.offset, self.offset + self.length
        with open(self.path, "rb", buffering=0) as f:
            f.seek(pos)
            while pos < end:
                n = f.readinto(view[:min(len(buf), end - pos)])
                if not n:
                    raise InputError(f"{self.path} became shorter while it was being uploaded")
                yield view[:n]
                pos += n
                if self.sent is not None:
                    self.sent(pos)


BodyFactory = Callable[[], Any]


class _OrasRegistry(oras.provider.Registry):  # type: ignore[misc]
    """oras-py's Registry with modelseal's transport: the one place oras-py is extended."""

    def __init__(self, host: str, *, scheme: str, verify: bool | str,
                 credentials: Credentials | None, docker_config: str | None,
                 retries: int) -> None:
        super().__init__(hostname=host, insecure=(scheme == "http"), tls_verify=verify,
                         auth_backend="basic")
        self.host = host
        self.retries = max(1, retries)
        self._explicit = credentials
        self._docker_config = docker_config
        self._creds_loaded = credentials is not None
        self._creds = credentials
        self._authz: str | None = None
        self._lock = threading.Lock()
        self.http: requests.Session = self.session
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=16,
                                                max_retries=0)
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
                    "client_id": "modelseal", **params}, timeout=TIMEOUT,
                    verify=self._tls_verify)
            else:
                headers = {"Authorization": creds.basic()} if creds is not None else {}
                resp = self.session.get(realm, params=params, headers=headers,
                                        timeout=TIMEOUT, verify=self._tls_verify)
        except requests.exceptions.SSLError as e:
            raise RegistryUnreachableError(
                f"TLS verification failed for the token service {realm} of registry "
                f"{self.host}: {_failure_reason(e)}") from e
        except requests.RequestException as e:
            raise RegistryUnreachableError(
                f"cannot reach the token service {realm} of registry {self.host}: "
                f"{_failure_reason(e)}") from e
        if resp.status_code in (401, 403):
            raise self._refused(creds) if creds is not None else self._missing()
        if resp.status_code != 200:
            raise AuthError(f"token service {realm} of registry {self.host} answered "
                            f"HTTP {resp.status_code}")
        try:
            data = resp.json()
            token = data.get("token") or data.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not token:
            raise AuthError(f"token service {realm} of registry {self.host} sent no token")
        return str(token)

    # -- requests -----------------------------------------------------------------------------

    def _send(self, method: str, url: str, headers: dict[str, str],
              body: BodyFactory | None, stream: bool) -> requests.Response:
        h = dict(headers)
        with self._lock:
            authz = self._authz
        if authz is not None:
            h["Authorization"] = authz
        resp = self.http.request(method, url, headers=h, data=body() if body else None,
                                    stream=stream, timeout=TIMEOUT, verify=self._tls_verify,
                                    allow_redirects=True)
        if resp.status_code != 401:
            return resp
        challenge = parse_challenge(resp.headers.get("WWW-Authenticate"))
        resp.close()
        self._authenticate(challenge, authz)
        with self._lock:
            h["Authorization"] = self._authz or ""
        resp = self.http.request(method, url, headers=h, data=body() if body else None,
                                    stream=stream, timeout=TIMEOUT, verify=self._tls_verify)
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
        delay = 0.5
        for attempt in range(attempts):
            last = attempt + 1 >= attempts
            try:
                resp = self._send(method, url, headers or {}, body, stream)
            except requests.exceptions.SSLError as e:
                raise RegistryUnreachableError(
                    f"TLS verification failed for registry {self.host}: "
                    f"{_failure_reason(e)}",
                    hint="pass --ca-file with the CA bundle that signed the registry's "
                         "certificate") from e
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as e:
                if not retry:
                    raise _Transient(f"lost the connection to registry {self.host}: "
                                     f"{_failure_reason(e)}") from e
                if last:
                    raise RegistryUnreachableError(
                        f"cannot reach registry {self.host}: {_failure_reason(e)}",
                        hint=f"gave up after {attempts} attempts; is the registry running "
                             "and is the address right?") from e
                time.sleep(delay)
                delay *= 2
                continue
            if resp.status_code in RETRY_STATUSES:
                if not retry:
                    resp.close()
                    raise _Transient(f"registry {self.host} answered HTTP "
                                     f"{resp.status_code} to {method} {url}")
                if not last:
                    wait = delay
                    ra = resp.headers.get("Retry-After", "")
                    if ra.isdigit():
                        wait = min(float(ra), 4.0)
                    resp.close()
                    time.sleep(wait)
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
            probe = self.http.get(f"http://{self.host}/v2/", timeout=5)
            return marker in probe.content
        except requests.RequestException:
            return False

    def _check_200_response(self, response: requests.Response) -> None:
        if response.status_code not in (200, 201, 202):
            raise self.error(response, f"{response.request.method} {response.request.url}")


class RegistryStore:
    """One repository of an OCI registry (see the module docstring for transport and threads)."""

    tags_page_size = 1000

    def __init__(self, host: str, repository: str, *, insecure: bool | None = None,
                 ca_file: str | None = None, username: str | None = None,
                 password: str | None = None, upload_mode: UploadMode = "auto",
                 chunk_size: int = 64 * MiB, retries: int = 5,
                 docker_config: str | None = None, mount_from: tuple[str, ...] = ()) -> None:
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
        creds = (Credentials(username, password, "the command line")
                 if username is not None and password is not None else None)
        self._reg = _OrasRegistry(host, scheme=scheme, verify=ca_file or True,
                                  credentials=creds, docker_config=docker_config,
                                  retries=self.retries)
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
                    total += len(chunk)
                    if total > MAX_MANIFEST_SIZE:
                        raise StoreError(f"{what} is larger than {MAX_MANIFEST_SIZE} bytes; "
                                         "refusing it")
                    h.update(chunk)
                    parts.append(chunk)
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as e:
                raise RegistryUnreachableError(
                    f"lost registry {self.host} while reading {what}: {_failure_reason(e)}") from e
            ctype = resp.headers.get("Content-Type", "").split(";")[0].strip()
            header_digest = resp.headers.get("Docker-Content-Digest")
        data = b"".join(parts)
        digest = "sha256:" + h.hexdigest()
        expected = reference if DIGEST_RE.match(reference) else header_digest
        if expected and expected.startswith("sha256:") and expected != digest:
            raise DigestMismatchError(
                f"{what} from registry {self.host} hashes to {digest}, not {expected}")
        if ctype not in MANIFEST_TYPES:
            ctype = self._media_type_from_json(data, what, ctype)
        return data, ctype, digest

    @staticmethod
    def _media_type_from_json(data: bytes, what: str, ctype: str) -> str:
        try:
            mt = load_json_object(data, what=what).get("mediaType")
        except InputError:
            mt = None
        if mt in MANIFEST_TYPES:
            return str(mt)
        raise StoreError(f"{what} has media type {ctype or mt!r}, which modelseal does not read "
                         f"(expected one of: {', '.join(MANIFEST_TYPES)})")

    def put_manifest(self, data: bytes, media_type: str, tag: str | None = None) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        ref = tag if tag is not None else digest
        resp = self._reg.do_request(self._url(f"manifests/{ref}"), "PUT", data=data,
                                    headers={"Content-Type": media_type})
        resp.close()
        if resp.status_code not in (200, 201):
            raise self._reg.error(resp, f"storing manifest {self.describe()}:{ref}")
        got = resp.headers.get("Docker-Content-Digest")
        if got and got.startswith("sha256:") and got != digest:
            raise DigestMismatchError(f"registry {self.host} stored manifest {ref} as {got}, "
                                      f"but its bytes hash to {digest}")
        return digest

    def delete_manifest(self, digest: str) -> None:
        """Delete a manifest by digest (registries need ``storage.delete.enabled``)."""
        resp = self._reg.do_request(self._url(f"manifests/{digest}"), "DELETE")
        resp.close()
        if resp.status_code not in (200, 202):
            raise self._reg.error(resp, f"deleting manifest {self.describe()}@{digest}")

    def list_tags(self) -> list[str]:
        tags: list[str] = []
        url: str | None = self._url(f"tags/list?n={self.tags_page_size}")
        while url:
            resp = self._reg.do_request(url, "GET")
            with resp:
                if resp.status_code == 404:
                    return tags  # repository unknown: no tags
                if resp.status_code != 200:
                    raise self._reg.error(resp, f"listing tags of {self.describe()}")
                try:
                    listed = load_json_object(resp.content, what="tag list").get("tags") or []
                except InputError as e:
                    raise StoreError(f"registry {self.host} sent an unreadable tag list") from e
                if isinstance(listed, list):
                    tags.extend(t for t in listed if isinstance(t, str))
                nxt = resp.links.get("next", {}).get("url")
                url = urllib.parse.urljoin(url, nxt) if nxt else None
        return tags

    def referrers_api(self, subject_digest: str) -> list[Descriptor] | None:
        out: list[Descriptor] = []
        url: str | None = self._url(f"referrers/{subject_digest}")
        first = True
        while url:
            resp = self._reg.do_request(url, "GET", headers={"Accept": INDEX_V1})
            with resp:
                if first and resp.status_code in (400, 404, 405, 501):
                    return None  # no referrers API (distribution 2.8 answers 404)
                if resp.status_code != 200:
                    raise self._reg.error(resp, f"listing referrers of {subject_digest}")
                try:
                    index = load_json_object(resp.content, what=f"referrers of {subject_digest}")
                except InputError as e:
                    raise StoreError(f"registry {self.host} sent an unreadable referrers "
                                     f"index for {subject_digest}: {e.message}") from e
                manifests = index.get("manifests")
                for m in manifests if isinstance(manifests, list) else []:
                    try:  # one malformed entry (anyone can push one) must not hide the rest
                        out.append(Descriptor.from_dict(m, "referrers index entry"))
                    except InputError:
                        continue
                nxt = resp.links.get("next", {}).get("url")
                url = urllib.parse.urljoin(url, nxt) if nxt else None
                first = False
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
                   progress: ProgressFn | None = None) -> None:
        """Stream a blob into ``out``, hashing as it comes; resumes with Range after a drop."""
        if not DIGEST_RE.match(digest):
            raise StoreError(f"unsupported digest {digest!r} (modelseal reads sha256 only)")
        h = hashlib.sha256()
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
                    h.update(chunk)
                    out.write(chunk)
                    if progress is not None:
                        progress(len(chunk))
                break
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as e:
                drops += 1
                if drops >= self.retries:
                    raise RegistryUnreachableError(
                        f"lost registry {self.host} while downloading blob {digest}: "
                        f"{_failure_reason(e)}") from e
                time.sleep(0.5 * drops)
            finally:
                resp.close()
        if size is not None and got != size:
            raise DigestMismatchError(f"blob {digest} on registry {self.host} is {got} bytes, "
                                      f"the manifest says {size}")
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
            return _FileBody(path, off, n, sent if report else None)

        sources = self.mount_from if mount_from is None else mount_from
        self._with_restarts(digest, lambda: self._upload_once(
            digest, size, body, path, sources, self.upload_mode))
        return True

    def _with_restarts(self, digest: str, once: Callable[[], None]) -> None:
        delay = 0.5
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
                time.sleep(delay)
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
        octet = {"Content-Type": "application/octet-stream"}
        if mode in ("auto", "monolithic"):
            url = _add_query(location, digest=digest)
            resp = self._reg.do_request(url, "PUT", headers=octet,
                                        body=lambda: body(0, size, True), retry=False)
            resp.close()
            if mode == "auto" and resp.status_code in REFUSED_MONOLITHIC:
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
            location = self._location(resp, f"the upload of {digest}")
            start += n
        resp = self._reg.do_request(_add_query(location, digest=digest), "PUT",
                                    headers={**octet, "Content-Length": "0"}, retry=False)
        resp.close()
        self._finish(resp, digest, path)

    def _cancel(self, location: str) -> None:
        with contextlib.suppress(StoreError):
            self._reg.do_request(location, "DELETE", retry=False).close()


def open_registry_store(ref: Ref, options: RegistryOptions | None = None) -> RegistryStore:
    """The store for a registry reference (``HOST[:PORT]/REPO...``)."""
    if ref.kind != "registry":
        raise UsageError(f"{ref} is not a registry reference")
    o = options or RegistryOptions()
    return RegistryStore(ref.location, ref.repository, insecure=o.insecure, ca_file=o.ca_file,
                         username=o.username, password=o.password, upload_mode=o.upload_mode,
                         chunk_size=o.chunk_size, retries=o.retries,
                         docker_config=o.docker_config, mount_from=o.mount_from)
