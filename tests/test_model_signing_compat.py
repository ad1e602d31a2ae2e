"""The OpenSSF ``model_signing`` 1.1.x CLI accepts model.sig files that modelseal signs.

Runs the real package (a dev extra: ``pip install -e .[dev]``) as a subprocess, exactly as a
deployer would: ``model_signing verify key --signature model.sig --public_key KEY.pub DIR``.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from modelseal.attest.model_signing import (
    key_hint,
    model_signing_statement,
    sign_model_signing,
    statement_files,
)
from modelseal.digest import hash_files
from modelseal.errors import InputError, SigningError
from modelseal.formats import MODEL_SIGNING_PREDICATE as PREDICATE_TYPE

pytest.importorskip("model_signing", reason="model-signing 1.1.x is a dev extra: "
                    "pip install -e .[dev]")


def _model_signing(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MODEL_SIGNING_LOG_LEVEL="WARNING")
    return subprocess.run([sys.executable, "-m", "model_signing", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=120)


def _make_model(root: Path) -> Path:
    """Nested files, a unicode name, names whose string and path orders differ, git files."""
    model = root / "tiny-model"
    (model / "a").mkdir(parents=True)
    (model / "tokenizer" / "deep" / "er").mkdir(parents=True)
    (model / ".git").mkdir()
    (model / "model.safetensors").write_bytes(os.urandom(300_000))
    (model / "config.json").write_text('{"architectures": ["Tiny"]}\n')
    (model / "a" / "b.bin").write_bytes(b"b")
    (model / "a-c.bin").write_bytes(b"a-c")  # "a-c" < "a/b" as strings, > as paths
    (model / "a.txt").write_bytes(b"")
    (model / "tokenizer" / "deep" / "er" / "vocab.txt").write_text("x\ny\n")
    (model / "ünïcode-名前.md").write_text("readme\n")
    (model / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (model / ".gitattributes").write_text("*.bin filter=lfs\n")
    return model


def _our_files(model: Path) -> list[tuple[str, str]]:
    paths = sorted(p for p in model.rglob("*") if p.is_file())
    return [(p.relative_to(model).as_posix(), d.sha256) for p, d in
            zip(paths, hash_files(paths), strict=True)]


def _payload(sig: Path) -> dict[str, object]:
    bundle = json.loads(sig.read_text())
    return json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))  # type: ignore[no-any-return]


@pytest.fixture
def keypair(tmp_path: Path) -> tuple[Path, Path]:
    from modelseal.attest.signers import keygen

    (tmp_path / "keys").mkdir()
    return keygen(tmp_path / "keys" / "modelseal-p256")


def test_model_signing_verify_key_accepts_modelseal_signature(
        tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    from modelseal.attest.signers import load_signer

    model = _make_model(tmp_path)
    sig = model / "model.sig"
    sig.write_bytes(sign_model_signing(_our_files(model), load_signer(str(keypair[0])),
                                       model_name=model.name))
    r = _model_signing("verify", "key", "--signature", sig, "--public_key", keypair[1], model)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Verification succeeded" in r.stdout
    assert "WARNING" not in r.stdout  # the key hint is model_signing's own, not a legacy one

    # and with the signature outside the model directory
    outside = tmp_path / "model.sig"
    outside.write_bytes(sig.read_bytes())
    sig.unlink()
    r = _model_signing("verify", "key", "--signature", outside, "--public_key", keypair[1], model)
    assert r.returncode == 0, r.stdout + r.stderr


def test_statement_is_the_one_model_signing_writes(
        tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    model = _make_model(tmp_path)
    theirs_sig = tmp_path / "theirs.sig"
    r = _model_signing("sign", "key", "--private_key", keypair[0], "--signature", theirs_sig,
                       model)
    assert r.returncode == 0, r.stdout + r.stderr
    theirs = _payload(theirs_sig)
    ours = model_signing_statement(_our_files(model), model_name=model.name)
    # ignore_paths is a set on their side (arbitrary order) and holds only the git paths here,
    # since their signature was written outside the model
    their_ser = dict(theirs["predicate"]["serialization"])  # type: ignore[index]
    our_ser = dict(ours["predicate"]["serialization"])
    assert set(their_ser.pop("ignore_paths")) <= set(our_ser.pop("ignore_paths"))
    assert their_ser == our_ser
    assert ours["predicate"]["resources"] == theirs["predicate"]["resources"]  # type: ignore[index]
    assert ours["subject"] == theirs["subject"]
    assert ours["predicateType"] == theirs["predicateType"] == PREDICATE_TYPE
    # modelseal reads theirs back
    signed = {r["name"]: r["digest"] for r in ours["predicate"]["resources"]}
    assert statement_files(theirs) == signed
    # and their bundle's key hint is what we compute
    hint = json.loads(theirs_sig.read_text())["verificationMaterial"]["publicKey"]["hint"]
    assert hint == key_hint(keypair[1].read_bytes())


def test_model_signing_refuses_tampered_model(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    from modelseal.attest.signers import load_signer

    model = _make_model(tmp_path)
    sig = tmp_path / "model.sig"
    sig.write_bytes(sign_model_signing(_our_files(model), load_signer(str(keypair[0]))))
    (model / "config.json").write_text('{"architectures": ["Evil"]}\n')
    r = _model_signing("verify", "key", "--signature", sig, "--public_key", keypair[1], model)
    assert r.returncode != 0
    assert "config.json" in r.stderr


def test_model_signing_refuses_extra_file(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    from modelseal.attest.signers import load_signer

    model = _make_model(tmp_path)
    sig = tmp_path / "model.sig"
    sig.write_bytes(sign_model_signing(_our_files(model), load_signer(str(keypair[0]))))
    (model / "extra.py").write_text("import os\n")
    r = _model_signing("verify", "key", "--signature", sig, "--public_key", keypair[1], model)
    assert r.returncode != 0
    assert "extra.py" in r.stderr


def test_model_signing_refuses_other_key(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    from modelseal.attest.signers import keygen, load_signer

    model = _make_model(tmp_path)
    sig = tmp_path / "model.sig"
    sig.write_bytes(sign_model_signing(_our_files(model), load_signer(str(keypair[0]))))
    _, other_pub = keygen(tmp_path / "keys" / "other")
    r = _model_signing("verify", "key", "--signature", sig, "--public_key", other_pub, model)
    assert r.returncode != 0
    assert "Key mismatch" in r.stderr


def test_p384_key_verifies(tmp_path: Path) -> None:
    from modelseal.attest.signers import keygen, load_signer

    priv, pub = keygen(tmp_path / "p384", algorithm="ecdsa-p384")
    model = _make_model(tmp_path)
    sig = tmp_path / "model.sig"
    sig.write_bytes(sign_model_signing(_our_files(model), load_signer(str(priv))))
    r = _model_signing("verify", "key", "--signature", sig, "--public_key", pub, model)
    assert r.returncode == 0, r.stdout + r.stderr


def test_ed25519_key_refused_before_signing(tmp_path: Path) -> None:
    from modelseal.attest.signers import keygen, load_signer

    priv, _ = keygen(tmp_path / "ed", algorithm="ed25519")
    with pytest.raises(SigningError, match="ECDSA"):
        sign_model_signing([("w.bin", "0" * 64)], load_signer(str(priv)))


def test_statement_refuses_paths_outside_the_model() -> None:
    for bad in ("../w.bin", "/etc/passwd", "a//b", "./a", "a/../b", ""):
        with pytest.raises(InputError):
            model_signing_statement([(bad, "0" * 64)])
    with pytest.raises(InputError, match="twice"):
        model_signing_statement([("a", "0" * 64), ("a", "1" * 64)])


def test_statement_leaves_out_ignored_paths() -> None:
    st = model_signing_statement([("model.sig", "0" * 64), (".git/HEAD", "1" * 64),
                                  ("w.bin", "sha256:" + "2" * 64), ("docs/x", "3" * 64)],
                                 ignore_paths=["model.sig", ".git", "docs/"])
    assert [r["name"] for r in st["predicate"]["resources"]] == ["w.bin"]
    assert st["predicate"]["serialization"]["ignore_paths"] == ["model.sig", ".git", "docs"]


def test_statement_files_refuses_inconsistent_subject() -> None:
    st = model_signing_statement([("w.bin", "2" * 64)])
    st["predicate"]["resources"][0]["digest"] = "3" * 64
    with pytest.raises(InputError, match="inconsistent"):
        statement_files(st)


def _modelseal(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "modelseal.cli", *map(str, args)], cwd=cwd,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"modelseal {args}: {r.stdout}\n{r.stderr}"
    return r


def test_model_signing_accepts_model_pushed_with_signer_and_pulled_from_registry(
        tmp_path: Path, keypair: tuple[Path, Path], registry: Any) -> None:
    """The deployer's path: push --signer to the registry, pull, download the model_signing
    attestation, and verify the pulled directory with model_signing alone."""
    model = _make_model(tmp_path)
    for p in (model / ".git" / "HEAD", model / ".gitattributes"):  # push packages every file
        p.unlink()
    (model / ".git").rmdir()
    ref = f"{registry.host}/models/tiny:v1"
    _modelseal("push", model, ref, "--signer", keypair[0], cwd=tmp_path)
    _modelseal("pull", ref, tmp_path / "pulled", cwd=tmp_path)
    _modelseal("attestations", ref, "--predicate-type", PREDICATE_TYPE,
               "--download", tmp_path / "dl", cwd=tmp_path)
    [sig] = list((tmp_path / "dl").iterdir())
    r = _model_signing("verify", "key", "--signature", sig, "--public_key", keypair[1],
                       tmp_path / "pulled")
    assert r.returncode == 0, r.stdout + r.stderr
    # the pulled bytes are what was signed: change one and model_signing refuses
    (tmp_path / "pulled" / "a.txt").write_bytes(b"changed")
    r = _model_signing("verify", "key", "--signature", sig, "--public_key", keypair[1],
                       tmp_path / "pulled")
    assert r.returncode != 0


def test_modelseal_verifies_its_model_signing_bundle_despite_the_pem_hint(
        tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    """The hint is model_signing's (sha256 of the PEM), not the keyid: our verifier still
    finds the key, and the DSSE signature still names the securesystemslib keyid."""
    from modelseal.attest.bundle import parse_bundle, verify_bundle
    from modelseal.attest.signers import load_public_key, load_signer

    data = sign_model_signing([("w.bin", "2" * 64)], load_signer(str(keypair[0])))
    key = load_public_key(keypair[1])
    pb = parse_bundle(data)
    assert pb.hint == key_hint(keypair[1].read_bytes()) != key.keyid
    assert pb.signatures[0][0] == key.keyid
    verified = verify_bundle(data, keys={key.keyid: key})
    assert verified.keyid == key.keyid
    assert statement_files(verified.statement) == {"w.bin": "2" * 64}
