"""Offline audit bundles: exported from a real registry, verified with no network at all
(``unshare -n``: a network namespace with no interface up)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from modelseal.audit.bundle import export_bundle, verify_bundle_file
from modelseal.errors import InputError, UsageError
from modelseal.oci.archive import ArchiveStore
from pipeline_fixtures import STEPS, honest_pipeline
from registry_server import RegistryServer


def _unshare_works() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    done = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
    if done.returncode != 0:
        return f"unshare -n is not permitted here: {done.stderr.decode().strip()}"
    return None


def _cli(*args: str, offline: bool = False) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "modelseal.cli", *args]
    if offline:
        cmd = ["unshare", "-n", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env={**os.environ, "HOME": os.environ.get("HOME", "/root")})


def test_bundle_verifies_with_no_network(tmp_path: Path, registry: RegistryServer) -> None:
    why = _unshare_works()
    if why:
        if os.environ.get("CI"):  # CI runs as root: no isolation there proves nothing
            pytest.fail(why)
        pytest.skip(why)
    p = honest_pipeline(tmp_path, registry.host)
    out = tmp_path / "audit.tar"
    done = _cli("bundle", "export", p.ref_text(), "-o", str(out), "--policy",
                str(p.policy_path), "--json")
    assert done.returncode == 0, done.stderr
    exported = json.loads(done.stdout)
    assert exported["digest"] == p.digest and exported["referrers"] == 5
    registry.stop()  # and no network either: the namespace has no interface up
    offline = _cli("bundle", "verify", str(out), "--json", offline=True)
    assert offline.returncode == 0, offline.stderr
    result = json.loads(offline.stdout)
    assert result["verified"] is True
    assert [s["name"] for s in result["steps"]] == list(STEPS)
    # inspect and attestations read the archive like any reference, offline too.
    shown = _cli("inspect", f"oci-archive:{out}:v1", "--json", offline=True)
    assert shown.returncode == 0 and json.loads(shown.stdout)["digest"] == p.digest
    atts = _cli("attestations", f"oci-archive:{out}:v1", "--json", offline=True)
    assert atts.returncode == 0 and len(json.loads(atts.stdout)["attestations"]) == 5


def test_bundle_without_weights_leaves_weight_blobs_out_and_still_verifies(
        tmp_path: Path, registry: RegistryServer) -> None:
    p = honest_pipeline(tmp_path, registry.host)
    out = tmp_path / "audit.tar"
    res = export_bundle(p.store, p.ref, out, policy=p.policy_path)
    manifest = json.loads(p.store.get_manifest(p.digest)[0])
    weights = [la["digest"] for la in manifest["layers"]
               if la["mediaType"].endswith(".weight.v1.raw")]
    assert weights and sorted(res.omitted_blobs) == sorted(weights)
    store = ArchiveStore(out)
    assert not any(store.has_blob(d) for d in weights)
    assert verify_bundle_file(out).verified
    # restoring it is refused before anything is written, saying why (evidence only)
    restored = tmp_path / "restored"
    res_copy = _cli("copy", f"oci-archive:{out}:v1", f"oci:{restored}:v1")
    assert res_copy.returncode == 2 and "--with-weights" in res_copy.stderr
    assert not restored.exists() or not any(restored.rglob("*"))
    full = export_bundle(p.store, p.ref, tmp_path / "full.tar", with_weights=True)
    assert full.omitted_blobs == []
    assert all(ArchiveStore(tmp_path / "full.tar").has_blob(d) for d in weights)


def test_bundle_with_an_altered_layout_is_refused(tmp_path: Path,
                                                  registry: RegistryServer) -> None:
    p = honest_pipeline(tmp_path, registry.host)
    out = tmp_path / "audit.tar"
    export_bundle(p.store, p.ref, out, policy=p.policy_path)
    work = tmp_path / "x"
    with tarfile.open(out) as tf:
        tf.extractall(work, filter="data")
    layout = work / "modelseal" / "layout.json"
    layout.write_bytes(layout.read_bytes() + b"\n")
    forged = tmp_path / "forged.tar"
    with tarfile.open(forged, "w") as tf:
        for name in sorted(os.listdir(work)):
            tf.add(work / name, arcname=name)
    with pytest.raises(InputError):
        verify_bundle_file(forged)


def test_bundle_verify_with_the_auditors_own_policy_refuses_another_owner(
        tmp_path: Path, registry: RegistryServer) -> None:
    from modelseal.attest.signers import keygen

    p = honest_pipeline(tmp_path, registry.host)
    out = tmp_path / "audit.tar"
    export_bundle(p.store, p.ref, out, policy=p.policy_path)
    keygen(tmp_path / "stranger")
    mine = tmp_path / "mine.yaml"
    mine.write_text(f"layout: {p.layout_path}\nlayout_keys: [{tmp_path / 'stranger.pub'}]\n")
    result = verify_bundle_file(out, policy=mine)
    assert not result.verified
    assert _cli("bundle", "verify", str(out), "--policy", str(mine)).returncode == 10


def test_bundle_without_policy_needs_one(tmp_path: Path, registry: RegistryServer) -> None:
    p = honest_pipeline(tmp_path, registry.host)
    out = tmp_path / "plain.tar"
    export_bundle(p.store, p.ref, out)
    with pytest.raises(UsageError):
        verify_bundle_file(out)
    assert verify_bundle_file(out, policy=p.policy_path).verified
    not_tar = tmp_path / "not.tar"
    not_tar.write_text("hello")
    done = _cli("bundle", "verify", str(not_tar))
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_failed_export_leaves_the_previous_bundle_intact(tmp_path: Path,
                                                         registry: RegistryServer) -> None:
    from modelseal.errors import NotFoundError

    p = honest_pipeline(tmp_path, registry.host)
    out = tmp_path / "audit.tar"
    export_bundle(p.store, p.ref, out, policy=p.policy_path)
    before = out.read_bytes()
    with pytest.raises(NotFoundError):
        export_bundle(p.store, p.ref.with_tag("missing"), out, policy=p.policy_path)
    assert out.read_bytes() == before
    assert [x.name for x in tmp_path.iterdir() if x.name.startswith(".audit.tar")] == []
