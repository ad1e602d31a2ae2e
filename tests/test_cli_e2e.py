"""The CI user's path end to end through the command line, against the TLS + htpasswd registry:
signed steps, push with the package step signed and the attestations attached, list them, pull,
and `model_signing verify` accepting the pulled model."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

from registry_server import RegistryServer


def _cli(*args: str | Path, cwd: Path, stdin: str | None = None,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "MODELSEAL_CACHE_DIR": str(cwd / "cache"), **(env or {})}
    return subprocess.run([sys.executable, "-m", "modelseal.cli", *map(str, args)], cwd=cwd,
                          input=stdin, capture_output=True, text=True, env=full_env, timeout=300)


def _predicate_type(bundle: Path) -> str:
    payload = json.loads(bundle.read_text())["dsseEnvelope"]["payload"]
    return str(json.loads(base64.b64decode(payload))["predicateType"])


def test_signed_pipeline_push_list_pull_and_model_signing_verify(
        auth_registry: RegistryServer, tmp_path: Path) -> None:
    work = tmp_path
    (work / "keys").mkdir()
    for who in ("trainer", "packager"):
        assert _cli("keygen", f"keys/{who}", cwd=work).returncode == 0
    (work / "train.py").write_text(
        "import os\nos.makedirs('model', exist_ok=True)\n"
        "open('model/weights.safetensors','wb').write(os.urandom(4096))\n"
        "open('model/config.json','w').write('{}')\n")
    p = _cli("run", "--step", "train", "--signer", "keys/trainer.key", "-m", "train.py",
             "-p", "model", "--", sys.executable, "train.py", cwd=work)
    assert p.returncode == 0, p.stderr
    ref = f"{auth_registry.host}/ml/tiny:v1"
    creds = ["--username", auth_registry.username or "", "--password-stdin",
             "--ca-file", str(auth_registry.ca_file)]
    p = _cli("push", "model", ref, "--name", "tiny", "--signer", "keys/packager.key",
             "--attestations", ".modelseal/attestations", "--json", *creds, cwd=work,
             stdin=f"{auth_registry.password}\n")
    assert p.returncode == 0, p.stderr
    pushed = json.loads(p.stdout)
    assert len(pushed["attached"]) == 3  # train link, package link, model-signing signature

    p = _cli("attestations", ref, "--json", "--download", "dl", *creds, cwd=work,
             stdin=f"{auth_registry.password}\n")
    assert p.returncode == 0, p.stderr
    listed = json.loads(p.stdout)
    assert listed["subject"] == pushed["digest"]
    types = sorted(a["predicateType"] for a in listed["attestations"])
    assert types == ["https://in-toto.io/attestation/link/v0.3",
                     "https://in-toto.io/attestation/link/v0.3",
                     "https://model_signing/signature/v1.0"]
    assert len(list((work / "dl").iterdir())) == 3

    p = _cli("pull", f"{auth_registry.host}/ml/tiny@{pushed['digest']}", "pulled", *creds,
             cwd=work, stdin=f"{auth_registry.password}\n")
    assert p.returncode == 0, p.stderr
    sig = next(f for f in (work / "dl").iterdir() if "model_signing" in _predicate_type(f))
    ms = subprocess.run([sys.executable, "-m", "model_signing", "verify", "key", "--signature",
                         str(sig), "--public_key", str(work / "keys/packager.pub"),
                         str(work / "pulled")], capture_output=True, text=True, timeout=120)
    assert ms.returncode == 0, ms.stdout + ms.stderr
    (work / "pulled" / "config.json").write_text('{"tampered": true}')
    ms = subprocess.run([sys.executable, "-m", "model_signing", "verify", "key", "--signature",
                         str(sig), "--public_key", str(work / "keys/packager.pub"),
                         str(work / "pulled")], capture_output=True, text=True, timeout=120)
    assert ms.returncode != 0


def test_wrong_password_and_missing_credentials_are_clear(auth_registry: RegistryServer,
                                                          tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"w")
    ref = f"{auth_registry.host}/ml/tiny:v1"
    p = _cli("push", "m", ref, "--username", "modelseal", "--password-stdin", "--ca-file",
             str(auth_registry.ca_file), cwd=tmp_path, stdin="wrong\n")
    assert p.returncode == 3
    assert auth_registry.host in p.stderr
    p = _cli("push", "m", ref, "--ca-file", str(auth_registry.ca_file), cwd=tmp_path,
             env={"DOCKER_CONFIG": str(tmp_path / "no-docker-config")})
    assert p.returncode == 3
    assert auth_registry.host in p.stderr
    p = _cli("push", "m", ref, cwd=tmp_path,
             env={"DOCKER_CONFIG": str(tmp_path / "no-docker-config")})
    assert p.returncode == 3
    assert "speaks HTTPS" in p.stderr and "--ca-file" in p.stderr


def test_a_directory_without_oci_prefix_is_a_usage_error_not_a_traceback(
        tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    for ref in ("./models:v1", "/srv/models:v1", "~/models:v1"):
        p = _cli("inspect", ref, cwd=tmp_path)
        assert p.returncode == 2, p.stderr  # usage error (docs/exit-codes.md)
        assert "Traceback" not in p.stderr
        assert f"oci:{ref}" in p.stderr  # the hint is the reference to write instead
