"""Run Debian's ``docker-registry`` (CNCF distribution 2.8) for tests.

A real registry on 127.0.0.1 at a free port, storage in a temporary directory, started and
stopped by PID. Optional TLS (a throwaway CA and a server certificate with SAN IP:127.0.0.1)
and htpasswd (bcrypt) authentication. Tests can play a malicious registry by editing the
files under ``storage_dir`` (see :func:`blob_path`).
"""

from __future__ import annotations

import base64
import datetime
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

REGISTRY_BIN = "/usr/bin/docker-registry"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def blob_path(storage_dir: Path, digest: str) -> Path:
    """Where the filesystem driver keeps a blob's bytes."""
    algo, hexd = digest.split(":", 1)
    return Path(storage_dir) / "docker/registry/v2/blobs" / algo / hexd[:2] / hexd / "data"


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA certificate and a server cert/key for 127.0.0.1: (ca_file, cert_file, key_file)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelseal test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca_file, cert_file = directory / "ca.pem", directory / "cert.pem"
    key_file = directory / "key.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return ca_file, cert_file, key_file


class RegistryServer:
    """One ``docker-registry`` process. ``start()`` / ``stop()`` keep the port and storage."""

    def __init__(self, workdir: Path, *, tls: bool = False,
                 credentials: tuple[str, str] | None = None,
                 token_server: TokenServer | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage_dir = self.workdir / "storage"
        self.storage_dir.mkdir(exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.tls = tls
        self.username, self.password = credentials if credentials else (None, None)
        self.ca_file: Path | None = None
        self.log_file = self.workdir / "registry.log"
        self.config_file = self.workdir / "config.yml"
        self.proc: subprocess.Popen[bytes] | None = None
        lines = [
            "version: 0.1",
            "log:",
            "  level: info",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.storage_dir}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: {self.host}",
            "  secret: modelseal-test-secret",  # fixed, so uploads survive a restart
        ]
        if tls:
            self.ca_file, cert, key = make_tls_files(self.workdir / "tls")
            lines += ["  tls:", f"    certificate: {cert}", f"    key: {key}"]
        if credentials:
            out = subprocess.run(["htpasswd", "-Bbn", credentials[0], credentials[1]],
                                 check=True, capture_output=True).stdout
            htpasswd = self.workdir / "htpasswd"
            htpasswd.write_bytes(out.strip() + b"\n")
            lines += ["auth:", "  htpasswd:", "    realm: modelseal-test",
                      f"    path: {htpasswd}"]
        self.token_server = token_server
        if token_server is not None:
            self.username, self.password = token_server.username, token_server.password
            lines += token_server.config_lines()
        self.config_file.write_text("\n".join(lines) + "\n")

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def _ping(self) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else None
        req = urllib.request.Request(self.url + "/v2/")
        try:
            with urllib.request.urlopen(req, timeout=2, context=ctx) as r:
                return bool(r.status == 200)
        except urllib.error.HTTPError as e:
            return e.code == 401  # up, and asking for credentials
        except (OSError, ssl.SSLError):
            return False

    def start(self, timeout: float = 20.0) -> None:
        """Start the process and wait until ``GET /v2/`` answers."""
        if self.proc is not None and self.proc.poll() is None:
            return
        log = open(self.log_file, "ab")  # noqa: SIM115 - owned by the child
        try:
            self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(self.config_file)],
                                         stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited ({self.proc.returncode}):\n"
                                   + self.log_file.read_text(errors="replace")[-4000:])
            if self._ping():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("docker-registry did not answer on " + self.url)

    def stop(self) -> None:
        """Stop the process by PID (SIGTERM, then SIGKILL)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def basic_auth_header(self) -> dict[str, str]:
        if not self.username:
            return {}
        raw = f"{self.username}:{self.password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}

    def __enter__(self) -> RegistryServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class TokenServer:
    """A small Docker token service (``auth.token``) for Bearer-auth tests, on 127.0.0.1.

    It follows the Docker token spec: Basic credentials in, a JWT (ES256, ``x5c`` header)
    granting the requested scope out. Every request is recorded in ``.requests``.
    """

    service = "modelseal-test"
    issuer = "modelseal-test-issuer"

    def __init__(self, workdir: Path, username: str, password: str) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.username, self.password = username, password
        self.requests: list[dict[str, str]] = []
        now = datetime.datetime.now(datetime.UTC)
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelseal token signer")])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(self._key, hashes.SHA256()))
        self._cert_der = cert.public_bytes(serialization.Encoding.DER)
        workdir.mkdir(parents=True, exist_ok=True)
        self.cert_file = workdir / "token-signer.pem"
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.port = free_port()
        self.realm = f"http://127.0.0.1:{self.port}/token"
        self._httpd: object | None = None

    def _jwt(self, scope: str) -> str:
        import json

        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        def b64(b: bytes) -> str:
            return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

        access = []
        for item in scope.split():
            kind, _, rest = item.partition(":")
            repo, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": repo, "actions": actions.split(",")})
        now = int(time.time())
        header = {"alg": "ES256", "typ": "JWT",
                  "x5c": [base64.b64encode(self._cert_der).decode()]}
        claims = {"iss": self.issuer, "sub": self.username, "aud": self.service,
                  "exp": now + 300, "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(),
                  "access": access}
        signing_input = (b64(json.dumps(header).encode()) + "."
                         + b64(json.dumps(claims).encode()))
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return signing_input + "." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def start(self) -> None:
        import http.server
        import json
        import threading
        import urllib.parse

        server = self
        expected = "Basic " + base64.b64encode(
            f"{self.username}:{self.password}".encode()).decode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                auth = self.headers.get("Authorization", "")
                server.requests.append({**query, "authorization": auth.split(" ")[0]})
                if auth != expected:
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps({"token": server._jwt(query.get("scope", "")),
                                   "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd = httpd
        threading.Thread(target=httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()  # type: ignore[attr-defined]
            httpd.server_close()  # type: ignore[attr-defined]

    def config_lines(self) -> list[str]:
        return ["auth:", "  token:", f"    realm: {self.realm}",
                f"    service: {self.service}", f"    issuer: {self.issuer}",
                f"    rootcertbundle: {self.cert_file}"]
