"""A local RFC 3161 Time-Stamp Authority on 127.0.0.1: OpenSSL's ``ts -reply`` over HTTP.

For the demo (``scripts/demo.sh`` starts and stops it) and the tests (``tests/tsa_server.py``
imports ``TSAServer`` from here). Not for production: the CA and the TSA key are throwaway
files made on the spot.

A throwaway CA (``ca.pem``) issues the TSA certificate (critical EKU timeStamping); both are
made with ``openssl req``/``openssl x509``. An ``http.server`` handler takes
``application/timestamp-query`` POSTs, runs ``openssl ts -reply`` on the query, and answers
with the DER ``TimeStampResp``.

    python scripts/local_tsa.py DIR [--url-file FILE]

makes the PKI in DIR, listens on a free port of 127.0.0.1, writes its URL to FILE (once it
accepts connections), and serves until SIGTERM or SIGINT. A policy trusts its timestamps with
``trusted_tsa: [DIR/ca.pem]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType

OPENSSL = "openssl"

_CONF = """\
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = placeholder
[ ca_ext ]
basicConstraints = critical,CA:true
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[ tsa_ext ]
basicConstraints = critical,CA:false
keyUsage = critical,digitalSignature
extendedKeyUsage = critical,timeStamping
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ tsa ]
default_tsa = tsa_config1
[ tsa_config1 ]
dir = {dir}
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.pem
# no "certs =": OpenSSL writes the SET OF certificates unsorted, which strict DER parsers
# (rfc3161-client) refuse; the response carries the TSA certificate alone
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = 1.3.6.1.4.1.57264.99.1
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


def _run(*args: str | Path, cwd: Path | None = None) -> bytes:
    return subprocess.run([OPENSSL, *map(str, args)], check=True, capture_output=True,
                          cwd=cwd).stdout


def make_tsa_pki(directory: Path, name: str = "modelseal test TSA") -> Path:
    """CA + TSA key and certificate in ``directory``; returns the openssl config path."""
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "openssl.cnf"
    conf.write_text(_CONF.format(dir=directory))
    (directory / "serial").write_text("01\n")
    _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", directory / "ca.key", "-out", directory / "ca.pem", "-days", "30",
         "-subj", f"/CN={name} root CA", "-config", conf, "-extensions", "ca_ext")
    _run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", directory / "tsa.key", "-out", directory / "tsa.csr",
         "-subj", f"/CN={name}", "-config", conf)
    _run("x509", "-req", "-in", directory / "tsa.csr", "-CA", directory / "ca.pem",
         "-CAkey", directory / "ca.key", "-CAcreateserial", "-days", "30",
         "-out", directory / "tsa.pem", "-extfile", conf, "-extensions", "tsa_ext")
    return conf


class TSAServer:
    """``openssl ts -reply`` behind HTTP on 127.0.0.1; ``.url``, ``.ca_file``, ``.requests``."""

    def __init__(self, workdir: Path, name: str = "modelseal test TSA") -> None:
        if shutil.which(OPENSSL) is None:
            raise RuntimeError("openssl is not installed")
        self.dir = workdir
        self.conf = make_tsa_pki(workdir, name)
        self.ca_file = workdir / "ca.pem"
        self.cert_file = workdir / "tsa.pem"
        self.requests = 0
        self.fail_with: int | None = None  # answer this HTTP status instead
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def reply(self, query: bytes) -> bytes:
        """Run ``openssl ts -reply`` on one DER query."""
        with self._lock:  # openssl's serial file is read-modify-write
            self.requests += 1
            q = self.dir / "query.tsq"
            q.write_bytes(query)
            out = self.dir / "reply.tsr"
            _run("ts", "-reply", "-config", self.conf, "-queryfile", q, "-out", out)
            return out.read_bytes()

    def start(self, port: int = 0) -> None:
        """Listen on 127.0.0.1:``port`` (0: a free port) and serve in a daemon thread."""
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                if server.fail_with is not None:
                    self.send_response(server.fail_with)
                    self.end_headers()
                    return
                try:
                    data = server.reply(body)
                except subprocess.CalledProcessError:
                    self.send_response(400)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/tsr"

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


def main(argv: list[str] | None = None) -> int:
    """Run a local TSA until SIGTERM/SIGINT; its URL goes to ``--url-file`` and stdout."""
    ap = argparse.ArgumentParser(description="A local RFC 3161 TSA (openssl ts) on 127.0.0.1.")
    ap.add_argument("dir", type=Path, help="where the throwaway CA, TSA key and certs go")
    ap.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    ap.add_argument("--url-file", type=Path, help="write the URL here once serving")
    args = ap.parse_args(argv)
    if shutil.which(OPENSSL) is None:
        print("local_tsa: openssl is not installed", file=sys.stderr)
        return 2
    server = TSAServer(args.dir.resolve(), "modelseal demo TSA")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start(args.port)
    if args.url_file:
        # written whole then renamed: a reader polling for the file never sees half a URL
        tmp = args.url_file.with_name(args.url_file.name + f".{os.getpid()}.tmp")
        tmp.write_text(server.url + "\n")
        tmp.replace(args.url_file)
    print(f"local TSA at {server.url} (CA: {server.ca_file})", flush=True)
    while not stop.wait(3600):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
