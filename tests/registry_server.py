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
                 credentials: tuple[str, str] | None = None) -> None:
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
