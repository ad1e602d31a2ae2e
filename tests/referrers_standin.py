"""A stand-in for a registry that has the OCI 1.1 referrers API.

No registry installable here implements ``GET /v2/<name>/referrers/<digest>`` (Debian ships
distribution 2.8), so this small proxy adds it, following the distribution spec, in front of a
real ``docker-registry``: every request is forwarded unchanged; manifests PUT through the proxy
that carry a ``subject`` are remembered, and the referrers endpoint answers with an image index
of their descriptors (``artifactType``, ``annotations``), filtered by ``?artifactType=`` as the
spec says (with the ``OCI-Filters-Applied`` header). It is a stand-in for that one endpoint;
everything else is the real registry.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

REFERRERS_RE = re.compile(r"^/v2/(?P<name>.+)/referrers/(?P<digest>sha256:[0-9a-f]{64})$")
MANIFEST_RE = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)$")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "content-length"}


class ReferrersStandin:
    """``with ReferrersStandin(backend_url) as s: s.host`` is a registry with the API."""

    def __init__(self, backend_url: str) -> None:
        self.backend = backend_url.rstrip("/")
        self.referrers: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    if k.lower() not in HOP_BY_HOP:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self) -> None:
                url = urlsplit(self.path)
                standin.requests.append((self.command, url.path))
                m = REFERRERS_RE.match(url.path)
                if m and self.command == "GET":
                    self._reply(*standin.index(m["name"], m["digest"], parse_qs(url.query)))
                    return
                body = self._body()
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                resp = requests.request(self.command, standin.backend + self.path, data=body,
                                        headers=headers, allow_redirects=False, timeout=60)
                mm = MANIFEST_RE.match(url.path)
                if mm and self.command == "PUT" and resp.status_code == 201:
                    standin.remember(mm["name"], body, self.headers.get("Content-Type", ""))
                self._reply(resp.status_code, dict(resp.headers), resp.content)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def remember(self, name: str, body: bytes, media_type: str) -> None:
        try:
            doc = json.loads(body)
        except ValueError:
            return
        subject = (doc.get("subject") or {}).get("digest") if isinstance(doc, dict) else None
        if not subject:
            return
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        desc: dict[str, Any] = {"mediaType": doc.get("mediaType") or media_type,
                                "digest": digest, "size": len(body)}
        artifact_type = doc.get("artifactType") or (doc.get("config") or {}).get("mediaType")
        if artifact_type:
            desc["artifactType"] = artifact_type
        if doc.get("annotations"):
            desc["annotations"] = doc["annotations"]
        with self.lock:
            self.referrers.setdefault((name, subject), {})[digest] = desc

    def forget(self, name: str, subject: str, digest: str) -> None:
        with self.lock:
            self.referrers.get((name, subject), {}).pop(digest, None)

    def index(self, name: str, subject: str,
              query: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            manifests = list(self.referrers.get((name, subject), {}).values())
        headers = {"Content-Type": "application/vnd.oci.image.index.v1+json"}
        wanted = query.get("artifactType")
        if wanted:
            manifests = [m for m in manifests if m.get("artifactType") in wanted]
            headers["OCI-Filters-Applied"] = "artifactType"
        body = json.dumps({"schemaVersion": 2,
                           "mediaType": "application/vnd.oci.image.index.v1+json",
                           "manifests": manifests}).encode()
        return 200, headers, body

    def __enter__(self) -> ReferrersStandin:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
