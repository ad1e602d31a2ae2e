"""Copying a model with every referrer between registries, directories and archives.

Real registries (Debian's docker-registry, two instances where the copy crosses registries);
the honest pipeline of pipeline_fixtures, so "verifies in its new home" is the real verifier.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelseal.attest.attachments import attach_bundle, subject_of
from modelseal.attest.bundle import sign_statement
from modelseal.attest.statement import statement
from modelseal.copy import copy
from modelseal.errors import DigestMismatchError, TagConflictError
from modelseal.oci import open_store
from modelseal.oci.archive import ArchiveStore
from modelseal.oci.referrers import list_referrers
from modelseal.refs import parse_ref
from modelseal.verify.pipeline import verify_model
from modelseal.verify.policy import load_policy
from paths import missing_tool
from pipeline_fixtures import Pipeline, honest_pipeline
from registry_server import REGISTRY_BIN, RegistryServer


@pytest.fixture
def second_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """Another plain registry: the destination of cross-registry copies."""
    import shutil

    if shutil.which(REGISTRY_BIN) is None:
        missing_tool("docker-registry")  # a failure in CI, where test.sh installs it
    server = RegistryServer(tmp_path_factory.mktemp("registry-b"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _sign_bom_signature(p: Pipeline) -> str:
    """A referrer of a referrer: a signed note about the first referrer (as cosign signs a
    BOM). Returns its digest."""
    first = list_referrers(p.store, p.digest)[0]
    st = statement([("referrer", first.digest)], "https://example.com/countersign/v1", {})
    bundle = sign_statement(st, p.functionaries["release"].signer)
    return attach_bundle(p.store, subject_of(p.store, first.digest), bundle).descriptor.digest


def _all_referrers(store: object, digest: str) -> set[str]:
    out: set[str] = set()
    level = [digest]
    while level:
        nxt = []
        for d in level:
            for r in list_referrers(store, d):  # type: ignore[arg-type]
                if r.digest not in out:
                    out.add(r.digest)
                    nxt.append(r.digest)
        level = nxt
    return out


def test_copy_between_registries_is_digest_identical_and_verifies(
        tmp_path: Path, registry: RegistryServer, second_registry: RegistryServer) -> None:
    p = honest_pipeline(tmp_path, registry.host)
    nested = _sign_bom_signature(p)
    dst_ref = parse_ref(f"{second_registry.host}/mirror/tiny:v1")
    dst = open_store(dst_ref)
    result = copy(p.store, p.ref, dst, dst_ref)
    assert result.digest == p.digest
    assert dst.resolve("v1") == p.digest
    src_all = _all_referrers(p.store, p.digest)
    assert nested in src_all
    assert _all_referrers(dst, p.digest) == src_all
    assert set(result.referrers) == src_all
    verdict = verify_model(dst, dst_ref, load_policy(p.policy_path))
    assert verdict.verified, [r.message for r in verdict.refusals]


def test_second_copy_after_interruption_copies_only_what_is_missing(
        tmp_path: Path, registry: RegistryServer, second_registry: RegistryServer) -> None:
    p = honest_pipeline(tmp_path, registry.host)
    dst_ref = parse_ref(f"{second_registry.host}/mirror/tiny:v1")
    dst = open_store(dst_ref)
    # An interrupted copy: one blob and nothing else arrived.
    manifest = json.loads(p.store.get_manifest(p.digest)[0])
    first = manifest["layers"][0]
    tmp = tmp_path / "blob"
    with open(tmp, "wb") as f:
        p.store.fetch_blob(first["digest"], first["size"], f)
    dst.put_blob_file(tmp, first["digest"], first["size"])
    assert dst.resolve("v1") is None
    again = copy(p.store, p.ref, dst, dst_ref)
    assert again.blobs_present == 1 and again.blobs_copied == again.blobs - 1
    third = copy(p.store, p.ref, dst, dst_ref)
    assert third.blobs_copied == 0 and third.blobs_present == third.blobs
    assert third.manifests_written == 0


def test_copy_refuses_to_move_an_existing_tag(tmp_path: Path, registry: RegistryServer) -> None:
    p = honest_pipeline(tmp_path, registry.host)
    other = parse_ref(f"oci:{tmp_path / 'out'}:v1")
    store = open_store(other)
    store.put_manifest(b'{"schemaVersion":2}', "application/vnd.oci.image.manifest.v1+json",
                       "v1")
    with pytest.raises(TagConflictError):
        copy(p.store, p.ref, store, other)


def test_copy_within_a_registry_mounts_blobs(tmp_path: Path, registry: RegistryServer) -> None:
    p = honest_pipeline(tmp_path, registry.host)
    dst_ref = parse_ref(f"{registry.host}/team-b/tiny:v1")
    result = copy(p.store, p.ref, open_store(dst_ref), dst_ref)
    assert result.blobs_mounted > 0 and result.bytes_copied == 0


def test_filter_type_copies_only_the_named_predicates(
        tmp_path: Path, registry: RegistryServer) -> None:
    p = honest_pipeline(tmp_path, registry.host)
    dst_ref = parse_ref(f"oci:{tmp_path / 'out'}:v1")
    link = "https://in-toto.io/attestation/link/v0.3"
    result = copy(p.store, p.ref, open_store(dst_ref), dst_ref, filter_types=[link])
    assert len(result.referrers) == 5
    missing = copy(p.store, p.ref, open_store(dst_ref), dst_ref,
                   filter_types=["https://example.com/none"])
    assert missing.referrers == [] and missing.referrers_filtered == 5


def test_oci_archive_round_trip_is_the_disaster_recovery_import(
        tmp_path: Path, registry: RegistryServer, second_registry: RegistryServer) -> None:
    p = honest_pipeline(tmp_path, registry.host)
    archive = tmp_path / "backup.tar"
    a_ref = parse_ref(f"oci-archive:{archive}:v1")
    a_store = ArchiveStore(archive, writable=True)
    copy(p.store, p.ref, a_store, a_ref)
    a_store.commit()
    a_store.close()
    with tarfile.open(archive) as tf:
        names = tf.getnames()
    assert names[:2] == ["oci-layout", "index.json"]
    # Read back without extracting, then import into a new registry.
    back = ArchiveStore(archive)
    assert back.resolve("v1") == p.digest
    verdict = verify_model(back, a_ref, load_policy(p.policy_path))
    assert verdict.verified, [r.message for r in verdict.refusals]
    dst_ref = parse_ref(f"{second_registry.host}/restored/tiny:v1")
    dst = open_store(dst_ref)
    copy(back, a_ref, dst, dst_ref)
    assert dst.resolve("v1") == p.digest
    assert verify_model(dst, dst_ref, load_policy(p.policy_path)).verified


def test_tampered_archive_blob_is_refused(tmp_path: Path, registry: RegistryServer) -> None:
    p = honest_pipeline(tmp_path, registry.host)
    archive = tmp_path / "backup.tar"
    store = ArchiveStore(archive, writable=True)
    copy(p.store, p.ref, store, parse_ref(f"oci-archive:{archive}:v1"))
    store.commit()
    store.close()
    layer = json.loads(p.store.get_manifest(p.digest)[0])["layers"][0]
    data = bytearray(archive.read_bytes())
    needle = p.store.get_blob_bytes(layer["digest"])[:32]
    at = bytes(data).index(needle)
    data[at] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(DigestMismatchError), open(tmp_path / "x", "wb") as out:
        ArchiveStore(archive).fetch_blob(layer["digest"], layer["size"], out)


def test_copy_cli_json_and_exit_codes(tmp_path: Path, registry: RegistryServer) -> None:
    p = honest_pipeline(tmp_path, registry.host)
    out = tmp_path / "m.tar"
    cmd = [sys.executable, "-m", "modelseal.cli", "copy", p.ref_text(),
           f"oci-archive:{out}:v1", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["digest"] == p.digest and len(doc["referrers"]) == 5
    missing = subprocess.run([sys.executable, "-m", "modelseal.cli", "copy",
                              f"{registry.host}/nope/nope:v1", f"oci:{tmp_path / 'x'}", "--json"],
                             capture_output=True, text=True, check=False)
    assert missing.returncode == 3 and "Traceback" not in missing.stderr
    pushed = subprocess.run([sys.executable, "-m", "modelseal.cli", "push",
                             str(p.model_dir), f"oci-archive:{tmp_path / 'p.tar'}:v1"],
                            capture_output=True, text=True, check=False)
    assert pushed.returncode == 2 and not (tmp_path / "p.tar").exists()
    bad = subprocess.run([sys.executable, "-m", "modelseal.cli", "inspect",
                          f"oci-archive:{tmp_path / 'policy.yaml'}"],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    shown = subprocess.run([sys.executable, "-m", "modelseal.cli", "inspect",
                            f"oci-archive:{out}:v1", "--json"],
                           capture_output=True, text=True, check=False)
    assert shown.returncode == 0 and json.loads(shown.stdout)["digest"] == p.digest


def test_copy_with_policy_verifies_in_the_new_home(tmp_path: Path,
                                                   registry: RegistryServer) -> None:
    from modelseal.attest.signers import keygen

    p = honest_pipeline(tmp_path, registry.host)
    cmd = [sys.executable, "-m", "modelseal.cli", "copy", p.ref_text(),
           f"oci:{tmp_path / 'home'}:v1", "--policy", str(p.policy_path), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["verification"]["verified"] is True
    keygen(tmp_path / "stranger")
    other = tmp_path / "other.yaml"
    other.write_text(f"layout: {p.layout_path}\nlayout_keys: [{tmp_path / 'stranger.pub'}]\n")
    cmd[cmd.index(str(p.policy_path))] = str(other)
    refused = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert refused.returncode == 10, refused.stderr


def test_archive_ignores_members_that_escape_or_are_links(tmp_path: Path) -> None:
    import gzip
    import hashlib
    import io

    from modelseal.errors import InputError, NotFoundError

    data = b"secret"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    tar = tmp_path / "evil.tar"
    with tarfile.open(tar, "w") as tf:
        for name, body in (("index.json", b'{"schemaVersion":2,"manifests":[]}'),
                           ("../outside", data)):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
        link = tarfile.TarInfo(f"blobs/sha256/{digest.partition(':')[2]}")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    store = ArchiveStore(tar)
    assert not store.has_blob(digest)
    with pytest.raises(NotFoundError):
        store.get_blob_bytes(digest)
    assert store.extra_files() == []
    gz = tmp_path / "model.tar.gz"
    gz.write_bytes(gzip.compress(tar.read_bytes()))
    with pytest.raises(InputError) as err:
        ArchiveStore(gz).list_tags()
    assert err.value.hint and "gunzip" in err.value.hint


def test_copy_into_a_registry_whose_index_lists_a_deleted_referrer(
        tmp_path: Path, registry: RegistryServer, second_registry: RegistryServer) -> None:
    """A referrer deleted in the destination must not make the next copy fail on the
    fallback index (distribution refuses an index naming a manifest it no longer has)."""
    from modelseal.oci.referrers import fallback_tag

    p = honest_pipeline(tmp_path, registry.host)
    dst_ref = parse_ref(f"{second_registry.host}/mirror/tiny:v1")
    dst = open_store(dst_ref)
    copy(p.store, p.ref, dst, dst_ref)
    # attached in the destination only, then deleted there: its index entry is dead
    local = attach_bundle(dst, subject_of(dst, p.digest), p.bundles["train"]).descriptor.digest
    dst.delete_manifest(local)  # type: ignore[attr-defined]
    st = statement([("model", p.digest)], "https://example.com/late/v1", {})
    late = attach_bundle(p.store, subject_of(p.store, p.digest),
                         sign_statement(st, p.functionaries["release"].signer))
    again = copy(p.store, p.ref, dst, dst_ref)
    assert late.descriptor.digest in again.referrers
    assert _all_referrers(dst, p.digest) == _all_referrers(p.store, p.digest)
    raw, _, _ = dst.get_manifest(fallback_tag(p.digest))
    assert {m["digest"] for m in json.loads(raw)["manifests"]} == {
        d.digest for d in list_referrers(p.store, p.digest)}


def _big_model(tmp_path: Path, host: str, size: int = 9 * 1024 * 1024) -> tuple[object, str]:
    import os

    from modelseal.modelpack import ModelMetadata
    from modelseal.transfer import push

    src = tmp_path / "big"
    src.mkdir()
    (src / "weights.bin").write_bytes(os.urandom(size))
    (src / "config.json").write_bytes(b'{"layers": 2}')
    ref = parse_ref(f"{host}/models/big:v1")
    store = open_store(ref)
    return store, push(src, store, ref, ModelMetadata({"name": "big"})).digest


def test_copy_between_registries_streams_without_a_temporary_file(
        tmp_path: Path, registry: RegistryServer, second_registry: RegistryServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    monkeypatch.setenv("MODELSEAL_COPY_TMPDIR", str(staging))
    src, digest = _big_model(tmp_path, registry.host)
    dst_ref = parse_ref(f"{second_registry.host}/mirror/big:v1")
    dst = open_store(dst_ref)
    seen: list[Path] = []
    real = dst.put_blob_stream  # type: ignore[attr-defined]

    def spy(*a: object, **kw: object) -> bool:
        seen.extend(staging.iterdir())
        return bool(real(*a, **kw))

    dst.put_blob_stream = spy  # type: ignore[attr-defined]
    result = copy(src, parse_ref(f"{registry.host}/models/big:v1"), dst, dst_ref)  # type: ignore[arg-type]
    assert result.blobs_copied == result.blobs and result.bytes_copied > 9 * 1024 * 1024
    assert seen == [] and list(staging.iterdir()) == []
    layer = json.loads(dst.get_manifest("v1")[0])["layers"]
    big = next(la for la in layer if la["size"] > 4 * 1024 * 1024)
    with open(tmp_path / "back", "wb") as out:
        dst.fetch_blob(big["digest"], big["size"], out)  # checked against its digest
    assert dst.resolve("v1") == digest


def test_copy_refuses_a_large_blob_altered_in_the_source_registry(
        tmp_path: Path, registry: RegistryServer, second_registry: RegistryServer) -> None:
    """A source registry serving other bytes for a streamed blob: the copy fails (exit 4's
    error), the destination neither holds the blob nor gets a tag."""
    from registry_server import blob_path

    src, digest = _big_model(tmp_path, registry.host)
    big = next(la for la in json.loads(src.get_manifest(digest)[0])["layers"]  # type: ignore[attr-defined]
               if la["size"] > 4 * 1024 * 1024)
    path = blob_path(registry.storage_dir, big["digest"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    dst_ref = parse_ref(f"{second_registry.host}/mirror/big:v1")
    dst = open_store(dst_ref)
    with pytest.raises(DigestMismatchError):
        copy(src, parse_ref(f"{registry.host}/models/big:v1"), dst, dst_ref)  # type: ignore[arg-type]
    assert not dst.has_blob(big["digest"])
    assert dst.resolve("v1") is None
