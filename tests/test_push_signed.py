"""`push --signer --attestations` as a CI job runs it, retries included, against the real
registry: a retry adds no referrer, the signer comes from MODELSEAL_SIGNER like every other
command's, push leaves out what `run` leaves out, and a key that cannot sign model.sig still
signs the package link."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelseal.attest.attachments import list_attestations
from modelseal.oci import open_store
from modelseal.refs import parse_ref
from registry_server import RegistryServer

LINK = "https://in-toto.io/attestation/link/v0.3"
MODEL_SIGNING = "https://model_signing/signature/v1.0"


def _cli(*args: str | Path, cwd: Path,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "MODELSEAL_CACHE_DIR": str(cwd / "cache"), **(env or {})}
    full_env.pop("MODELSEAL_SIGNER", None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "modelseal.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=full_env, timeout=300, check=False)


def _trained(work: Path, algorithm: str = "ecdsa-p256") -> None:
    """A model recorded by `run` as train's products, with the litter a Python job leaves."""
    (work / "keys").mkdir()
    for who in ("trainer", "packager"):
        p = _cli("keygen", f"keys/{who}", "--algorithm", algorithm, cwd=work)
        assert p.returncode == 0, p.stderr
    (work / "train.py").write_text(
        "import os\nos.makedirs('model/__pycache__', exist_ok=True)\n"
        "open('model/weights.safetensors','wb').write(b'w' * 4096)\n"
        "open('model/config.json','w').write('{}')\n"
        "open('model/__pycache__/m.cpython-311.pyc','wb').write(b'pyc')\n"
        "open('model/helper.pyc','wb').write(b'pyc')\n"
        "open('model/.DS_Store','wb').write(b'finder')\n")
    p = _cli("run", "--step", "train", "--signer", "keys/trainer.key", "-m", "train.py",
             "-p", "model", "--", sys.executable, "train.py", cwd=work)
    assert p.returncode == 0, p.stderr


def _referrers(registry: RegistryServer, ref: str) -> list[str]:
    r = parse_ref(ref)
    store = open_store(r)
    digest = store.resolve(r.reference)
    assert digest is not None
    return [i.descriptor.digest for i in list_attestations(store, digest)]


def test_retry_of_a_signed_push_attaches_nothing_new(registry: RegistryServer,
                                                     tmp_path: Path) -> None:
    _trained(tmp_path)
    ref = f"{registry.host}/ml/retry:v1"
    args = ["push", "model", ref, "--signer", "keys/packager.key",
            "--attestations", ".modelseal/attestations", "--json"]
    first = _cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert len(json.loads(first.stdout)["attached"]) == 3  # train link, package link, model.sig
    before = _referrers(registry, ref)
    assert len(before) == 3
    for _ in range(2):  # the CI job retried, twice
        again = _cli(*args, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        out = json.loads(again.stdout)
        assert out["attached"] == []
        assert sorted(out["alreadyAttached"]) == sorted(before)
    assert sorted(_referrers(registry, ref)) == sorted(before)


def test_attaching_the_same_bundles_twice_adds_nothing(registry: RegistryServer,
                                                      tmp_path: Path) -> None:
    _trained(tmp_path)
    ref = f"{registry.host}/ml/attach:v1"
    assert _cli("push", "model", ref, cwd=tmp_path).returncode == 0
    first = _cli("attach", ref, ".modelseal/attestations", "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert len(json.loads(first.stdout)["attached"]) == 1
    second = _cli("attach", ref, ".modelseal/attestations", "--json", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    out = json.loads(second.stdout)
    assert out["attached"] == [] and len(out["alreadyAttached"]) == 1
    assert len(_referrers(registry, ref)) == 1


def test_push_honours_modelseal_signer(registry: RegistryServer, tmp_path: Path) -> None:
    _trained(tmp_path)
    ref = f"{registry.host}/ml/envsigner:v1"
    p = _cli("push", "model", ref, "--json", cwd=tmp_path,
             env={"MODELSEAL_SIGNER": "keys/packager.key"})
    assert p.returncode == 0, p.stderr
    assert len(json.loads(p.stdout)["attached"]) == 2  # package link, model.sig
    # the package link is named as every signed bundle is: <step>.<keyid8>.intoto.sigstore.json
    assert len(list((tmp_path / ".modelseal" / "attestations").glob(
        "package.*.intoto.sigstore.json"))) == 1


def test_push_packages_exactly_what_run_recorded(registry: RegistryServer,
                                                 tmp_path: Path) -> None:
    """__pycache__, *.pyc and .DS_Store are left out by push as by run: train's products and
    the package equal, so the layout's MATCH holds."""
    _trained(tmp_path)
    ref = f"{registry.host}/ml/excludes:v1"
    assert _cli("push", "model", ref, cwd=tmp_path).returncode == 0
    p = _cli("inspect", ref, "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    layers = json.loads(p.stdout)["manifest"]["layers"]
    packaged = sorted(la["annotations"]["org.cncf.model.filepath"] for la in layers)
    assert packaged == ["config.json", "weights.safetensors"]
    (link,) = (tmp_path / ".modelseal" / "attestations").glob("train.*")
    from modelseal.attest.bundle import parse_bundle

    st = parse_bundle(link.read_bytes()).statement
    assert st is not None
    assert sorted(s["name"] for s in st["subject"]) == ["model/config.json",
                                                         "model/weights.safetensors"]


def test_push_exclude_leaves_out_more(registry: RegistryServer, tmp_path: Path) -> None:
    _trained(tmp_path)
    ref = f"{registry.host}/ml/exclude-more:v1"
    assert _cli("push", "model", ref, "--exclude", "config.json", cwd=tmp_path).returncode == 0
    p = _cli("inspect", ref, "--json", cwd=tmp_path)
    layers = json.loads(p.stdout)["manifest"]["layers"]
    assert [la["annotations"]["org.cncf.model.filepath"] for la in layers] == [
        "weights.safetensors"]


@pytest.mark.parametrize("algorithm", ["ed25519"])
def test_push_with_a_key_model_signing_cannot_use_signs_the_link(
        registry: RegistryServer, tmp_path: Path, algorithm: str) -> None:
    """model_signing verifies ECDSA only: an Ed25519 push signs and attaches the package link
    (and says why model.sig is missing) instead of failing after the upload."""
    _trained(tmp_path, algorithm)
    ref = f"{registry.host}/ml/ed25519:v1"
    p = _cli("push", "model", ref, "--signer", "keys/packager.key", "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert [s["file"] for s in out["skipped"]] == ["model.sig"]
    assert len(out["attached"]) == 1
    atts = tmp_path / ".modelseal" / "attestations"
    assert len(list(atts.glob("package.*.intoto.sigstore.json"))) == 1
    assert not (atts / "model.sig").exists()
    r = parse_ref(ref)
    store = open_store(r)
    digest = store.resolve(r.reference)
    assert digest is not None
    assert [i.predicate_type for i in list_attestations(store, digest)] == [LINK]


def test_model_signing_verify_of_the_source_directory_skips_what_push_left_out(
        registry: RegistryServer, tmp_path: Path) -> None:
    """push leaves out __pycache__, *.pyc and .DS_Store; model.sig tells model_signing to
    skip them, so `model_signing verify` accepts the source directory as well as a pull."""
    pytest.importorskip("model_signing")
    _trained(tmp_path)
    ref = f"{registry.host}/ml/ms-source:v1"
    p = _cli("push", "model", ref, "--signer", "keys/packager.key", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    sig = tmp_path / ".modelseal" / "attestations" / "model.sig"
    r = subprocess.run([sys.executable, "-m", "model_signing", "verify", "key", "--signature",
                        str(sig), "--public_key", str(tmp_path / "keys" / "packager.pub"),
                        str(tmp_path / "model")], capture_output=True, text=True, timeout=120,
                       check=False)
    assert r.returncode == 0, r.stdout + r.stderr
