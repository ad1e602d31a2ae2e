"""HTTP to a registry: one session per host, TLS, authentication, timeouts and ONE retry
policy. :mod:`modelseal.oci.registry` speaks the distribution API over it.

Built on oras-py's ``Registry`` (its session and cookie policy), extended here, in one place,
for what oras-py lacks (docs: DESIGN.md, "Observed pitfalls of oras-py"):

- authentication: Basic and Bearer token challenges told apart (a Basic realm is not a token
  URL), credentials from the caller or the Docker config / credential helpers, and the
  ``Authorization`` header sent up front once known, so a large upload never meets a 401
  mid-body; ``~/.docker/config.json`` is never written;
- one retry policy (:class:`RetryPolicy`): what can heal is retried with exponential backoff
  (connection resets, 5xx, 429 honouring ``Retry-After``); what cannot is not (unknown host,
  connection refused, TLS failures, timeouts: a registry silent for ``--timeout`` seconds has
  had its chance). Every loop that tries again (a request, a resumed download, a restarted
  upload, a manifest racing a blob link, a restarted copy stream) waits as it says;
- a connect and read timeout on every request and an optional deadline on the whole command
  (:mod:`modelseal._util.network`); Ctrl-C/SIGTERM shut down open connections so worker
  threads stop at once;
- errors mapped onto modelseal's hierarchy (AuthError, NotFoundError,
  RegistryUnreachableError ...), with messages naming the registry;
- request bodies produced by a factory, so a request can be replayed after a challenge.

Plain HTTP for ``localhost``, ``127.0.0.1`` and ``::1`` (as docker does), HTTPS for every
other host unless told otherwise; ``ca_file`` for private TLS.

Threads: one ``requests.Session`` (keep-alive, a pool of 16 connections) is shared, and the
authentication state is guarded by a lock, so requests may run from several threads at once.
"""

from __future__ import annotations

import contextlib
import email.utils
import os
import random
import socket
import ssl
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import oras.provider
import requests
import requests.adapters
import urllib3
import urllib3.connection
import urllib3.exceptions

from modelseal._util import network
from modelseal.errors import (
    AuthError,
    NotFoundError,
    RegistryTimeoutError,
    RegistryUnreachableError,
    StoreError,
)
from modelseal.oci.auth import (
    LOGIN_HINT,
    Challenge,
    Credentials,
    docker_credentials,
    parse_challenge,
)
from modelseal.oci.parse import MAX_ERROR_BYTES, loads_json, parse_error_body

MiB = 1024 * 1024
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
MAX_RETRY_AFTER = 60.0  # a registry asking us to wait longer is treated as down


@dataclass(frozen=True)
class RetryPolicy:
    """The one retry policy: a failure that can heal (:func:`classify_failure`,
    ``RETRY_STATUSES``) is tried again, ``attempts`` tries in all, waiting ``backoff``
    seconds before the first retry, doubled for each next one (at most ``cap``), with up to
    half of it added at random so that parallel workers do not retry in step."""

    attempts: int = 5
    backoff: float = 0.25
    cap: float = MAX_RETRY_AFTER

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0: the first retry)."""
        return min(self.cap, self.backoff * 2.0 ** min(retry, 30)) * (1 + random.random() / 2)

    def pause(self, retry: int) -> None:
        """Wait before retry number ``retry``; Ctrl-C wakes it (Interrupted)."""
        network.sleep(self.delay(retry))


def scheme_for(host: str, insecure: bool | None, ca_file: str | None) -> str:
    """``http`` or ``https``: ``insecure`` None picks plain HTTP for loopback hosts only
    (unless a CA file is given), True forces plain HTTP, False forces HTTPS."""
    if insecure is None:
        return "http" if is_loopback(host) and not ca_file else "https"
    return "http" if insecure else "https"


def host_name(host: str) -> str:
    """``127.0.0.1:5000`` -> ``127.0.0.1``; ``[::1]:5000`` -> ``::1``."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    return host_name(host) in LOOPBACK_HOSTS


class Transient(StoreError):
    """A failure worth retrying (connection lost, 5xx) in a request that was not retried."""


def failure_reason(exc: BaseException) -> str:
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


def error_details(resp: requests.Response) -> tuple[list[str], str]:
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


BodyFactory = Callable[[], Any]


class Transport(oras.provider.Registry):  # type: ignore[misc]
    """HTTP to one registry host: oras-py's ``Registry`` (its session and cookie policy) with
    modelseal's authentication, TLS, timeouts and retry policy. oras-py's own client methods
    (``get_tags``, ``get_blob`` ...) call :meth:`do_request`, so they run over this transport
    too. Only oras-py's public constructor and ``session`` are relied on."""

    def __init__(self, host: str, *, scheme: str, verify: bool | str,
                 credentials: Credentials | None, docker_config: str | None,
                 retry: RetryPolicy, timeout: float | None = None) -> None:
        super().__init__(hostname=host, insecure=(scheme == "http"), tls_verify=verify,
                         auth_backend="basic")
        self.host = host
        self.retry = retry
        self.timeout = timeout
        self.tls_verify: bool | str = verify
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
            self.tls_verify = env_ca
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
                    verify=self.tls_verify, stream=True)
            else:
                headers = {"Authorization": creds.basic()} if creds is not None else {}
                resp = self.session.get(realm, params=params, headers=headers,
                                        timeout=self.timeouts(), verify=self.tls_verify,
                                        stream=True)
        except requests.exceptions.SSLError as e:
            if network.cancelled():
                raise network.Interrupted() from e
            raise RegistryUnreachableError(
                f"TLS verification failed for the token service {realm} of registry "
                f"{self.host}: {failure_reason(e)}") from e
        except requests.RequestException as e:
            if network.cancelled():
                raise network.Interrupted() from e
            cls = (RegistryTimeoutError if classify_failure(e) == "timeout"
                   else RegistryUnreachableError)
            raise cls(f"cannot reach the token service {realm} of registry {self.host}: "
                      f"{failure_reason(e)}") from e
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
        network.check_stopped()
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
                                 verify=self.tls_verify, allow_redirects=True)
        if resp.status_code != 401:
            return resp
        challenge = parse_challenge(resp.headers.get("WWW-Authenticate"))
        resp.close()
        self._authenticate(challenge, authz)
        with self._lock:
            h["Authorization"] = self._authz or ""
        resp = self.http.request(method, url, headers=h, data=body() if body else None,
                                 stream=stream, timeout=self.timeouts(),
                                 verify=self.tls_verify)
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
        failure raises :class:`Transient` for the caller to restart a larger operation.
        """
        if body is None and data is not None:
            payload = data

            def body() -> Any:
                return payload
        if json is not None:
            raise TypeError("pass JSON as bytes")
        attempts = self.retry.attempts if retry else 1
        path = urllib.parse.urlsplit(url).path
        for attempt in range(attempts):
            last = attempt + 1 >= attempts
            network.check_cancelled()
            network.check_stopped()
            try:
                resp = self._send(method, url, headers or {}, body, stream)
            except requests.exceptions.SSLError as e:
                if network.cancelled():
                    raise network.Interrupted() from e
                raise RegistryUnreachableError(
                    f"TLS verification failed for registry {self.host}: "
                    f"{failure_reason(e)}",
                    hint="pass --ca-file with the CA bundle that signed the registry's "
                         "certificate") from e
            except requests.RequestException as e:
                if network.cancelled():
                    raise network.Interrupted() from e
                if not isinstance(e, (requests.ConnectionError, requests.Timeout,
                                      requests.exceptions.ChunkedEncodingError,
                                      requests.exceptions.ContentDecodingError)):
                    raise StoreError(f"request {method} {path} to registry {self.host} "
                                     f"failed: {failure_reason(e)}") from e
                kind = classify_failure(e)
                if kind == "timeout":
                    raise self.timeout_error(f"{method} {path}", e) from e
                if kind in ("dns", "refused"):
                    # does not heal by retrying: say so at once, not after 8 s of backoff
                    raise RegistryUnreachableError(
                        f"cannot reach registry {self.host}: {failure_reason(e)}",
                        hint="is the registry running and is the address right?") from e
                if not retry:
                    raise Transient(f"lost the connection to registry {self.host}: "
                                     f"{failure_reason(e)}") from e
                if last:
                    raise RegistryUnreachableError(
                        f"cannot reach registry {self.host}: {failure_reason(e)}",
                        hint=f"gave up after {attempts} attempts; is the registry running "
                             "and is the address right?") from e
                self.retry.pause(attempt)
                continue
            if resp.status_code in RETRY_STATUSES:
                wait = self.retry.delay(attempt)
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
                    raise Transient(f"registry {self.host} answered HTTP "
                                     f"{resp.status_code} to {method} {path}")
                if not last:
                    resp.close()
                    network.sleep(wait)
                    continue
            return resp
        raise AssertionError("unreachable")

    def error(self, resp: requests.Response, what: str) -> StoreError:
        """The modelseal error for an unexpected response."""
        _, msg = error_details(resp)
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
