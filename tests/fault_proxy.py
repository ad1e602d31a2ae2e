"""A small HTTP proxy on 127.0.0.1 that injects registry faults in front of a real registry.

Every request is forwarded unchanged to the backend (Debian's docker-registry) unless a fault
rule matches it (method and a regular expression on the path), in which case the proxy:

- ``stall``: reads the request and then says nothing (a stall before the headers);
- ``stall_body``: forwards, sends the status, headers and the first ``after`` bytes of the
  body, then says nothing (a stall mid-body);
- ``reset``: reads the request and resets the connection (TCP RST);
- ``status``: answers ``status`` with ``headers`` and ``body`` (5xx, 429 with Retry-After);
- ``link``: forwards and adds ``Link: <url>; rel="next"``, with ``url`` a string or a
  function of the request path (``"self"`` points the link back at the request itself);
- ``body``: answers 200 with ``body`` (bytes or a function of the path) and ``headers``
  (nested JSON, descriptors with missing or mistyped fields, ...).

A rule applies ``times`` times (None: always). ``requests`` records (method, path) of every
request. Stalls end when the proxy stops, so tests never leave threads behind.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import requests

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "content-length"}


@dataclass
class Fault:
    action: str
    method: str | None = None
    path: str = ".*"
    times: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method is not None and self.method != method:
            return False
        return re.search(self.path, path) is not None


class FaultProxy:
    """``with FaultProxy(registry.url) as proxy: proxy.host`` is the faulty registry."""

    def __init__(self, backend_url: str) -> None:
        self.backend = backend_url.rstrip("/")
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.http = requests.Session()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def handle_one_request(self) -> None:
                with contextlib.suppress(OSError, ValueError):
                    super().handle_one_request()

            def finish(self) -> None:
                with contextlib.suppress(OSError, ValueError):
                    super().finish()

            def _body(self) -> bytes:
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _reply(self, status: int, headers: dict[str, str], body: bytes,
                       cut: int | None = None) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    if k.lower() not in HOP_BY_HOP:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command == "HEAD":
                    return
                if cut is None:
                    self.wfile.write(body)
                    return
                self.wfile.write(body[:cut])
                self.wfile.flush()
                proxy.stopping.wait(3600)
                self.close_connection = True

            def _reset(self) -> None:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True

            def _forward(self, body: bytes) -> requests.Response:
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in HOP_BY_HOP and k.lower() != "host"}
                return proxy.http.request(self.command, proxy.backend + self.path, data=body,
                                          headers=headers, allow_redirects=False, timeout=60)

            def _handle(self) -> None:
                path = urlsplit(self.path).path
                with proxy.lock:
                    proxy.requests.append((self.command, self.path))
                    fault = next((f for f in proxy.faults if f.matches(self.command, path)),
                                 None)
                    if fault is not None:
                        fault.hits += 1
                body = self._body()
                if fault is None:
                    resp = self._forward(body)
                    self._reply(resp.status_code, self._rewrite(dict(resp.headers)),
                                resp.content)
                    return
                p = fault.params
                if fault.action == "stall":
                    proxy.stopping.wait(p.get("seconds", 3600))
                    self.close_connection = True
                elif fault.action == "reset":
                    self._reset()
                elif fault.action == "status":
                    self._reply(p.get("status", 503), dict(p.get("headers", {})),
                                p.get("body", b""))
                elif fault.action == "body":
                    content = p["body"](self.path) if callable(p["body"]) else p["body"]
                    headers = {"Content-Type": "application/json", **p.get("headers", {})}
                    self._reply(p.get("status", 200), headers, content)
                elif fault.action == "stall_body":
                    resp = self._forward(body)
                    self._reply(resp.status_code, self._rewrite(dict(resp.headers)),
                                resp.content, cut=p.get("after", 1))
                elif fault.action == "link":
                    resp = self._forward(body)
                    url: str | Callable[[str], str] = p.get("url", "self")
                    target = (self.path if url == "self"
                              else url(self.path) if callable(url) else url)
                    headers = {**self._rewrite(dict(resp.headers)),
                               "Link": f'<{target}>; rel="next"'}
                    self._reply(resp.status_code, headers, resp.content)
                else:
                    raise AssertionError(f"unknown fault {fault.action}")

            def _rewrite(self, headers: dict[str, str]) -> dict[str, str]:
                # upload Locations name the backend: send the client back through the proxy
                loc = headers.get("Location")
                if loc and loc.startswith(proxy.backend):
                    headers["Location"] = loc[len(proxy.backend):]
                return headers

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda *a: None  # type: ignore[method-assign]
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, action: str, *, method: str | None = None, path: str = ".*",
            times: int | None = None, **params: Any) -> Fault:
        """Add a fault rule (first match wins); returns it (``.hits`` counts uses)."""
        fault = Fault(action, method, path, times, params)
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()

    def seen(self, method: str, pattern: str) -> int:
        """How many requests with ``method`` had a path matching ``pattern``."""
        with self.lock:
            return sum(1 for m, p in self.requests if m == method and re.search(pattern, p))

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self.http.close()
