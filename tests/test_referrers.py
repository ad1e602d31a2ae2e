"""Attestations attached as OCI referrers: nothing lost under concurrency, nothing lost to
garbage collection, found through the fallback tag on Debian's registry and the layout dir."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelseal.attest.attachments import subject_of
from modelseal.modelpack import ModelMetadata
from modelseal.oci import open_store
from modelseal.oci.referrers import attach, fallback_tag, fetch_referrer_blob, list_referrers
from modelseal.oci.store import Store
from modelseal.refs import parse_ref
from modelseal.transfer import push
from registry_server import REGISTRY_BIN, RegistryServer

ART = "application/vnd.example.note.v1+json"


def _model(tmp_path: Path, ref_text: str) -> tuple[Store, str]:
    src = tmp_path / "m"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(1000))
    ref = parse_ref(ref_text)
    store = open_store(ref)
    result = push(src, store, ref, ModelMetadata({"name": "m"}))
    return store, result.digest


def _attach_one(args: tuple[str, str, int]) -> str:
    ref_text, subject_digest, i = args
    ref = parse_ref(ref_text)
    store = open_store(ref)
    subject = subject_of(store, subject_digest)
    att = attach(store, subject, artifact_type=ART, blob=json.dumps({"n": i}).encode(),
                 blob_media_type="application/json")
    return att.descriptor.digest


@pytest.mark.parametrize("backend", ["registry", "oci"])
def test_sixteen_concurrent_attachers_lose_nothing(backend: str, tmp_path: Path,
                                                   request: pytest.FixtureRequest) -> None:
    if backend == "registry":
        reg: RegistryServer = request.getfixturevalue("registry")
        ref_text = f"{reg.host}/models/race:v1"
    else:
        ref_text = f"oci:{tmp_path / 'layout'}:v1"
    store, digest = _model(tmp_path, ref_text)
    with multiprocessing.get_context("spawn").Pool(16) as pool:
        attached = pool.map(_attach_one, [(ref_text, digest, i) for i in range(16)])
    assert len(set(attached)) == 16
    found = {d.digest for d in list_referrers(store, digest, ART)}
    assert set(attached) <= found
    blobs = {json.loads(fetch_referrer_blob(store, d, digest)[0])["n"]
             for d in list_referrers(store, digest, ART)}
    assert blobs == set(range(16))


def test_referrers_survive_garbage_collection(registry: RegistryServer, tmp_path: Path) -> None:
    store, digest = _model(tmp_path, f"{registry.host}/models/gc:v1")
    subject = subject_of(store, digest)
    mine = {attach(store, subject, artifact_type=ART, blob=b'{"n": %d}' % i,
                   blob_media_type="application/json").descriptor.digest for i in range(3)}
    registry.stop()
    gc = subprocess.run([REGISTRY_BIN, "garbage-collect", "--delete-untagged",
                         str(registry.config_file)], capture_output=True, text=True)
    assert gc.returncode == 0, gc.stderr
    registry.start()
    store = open_store(parse_ref(f"{registry.host}/models/gc:v1"))
    found = list_referrers(store, digest, ART)
    assert {d.digest for d in found} == mine
    for d in found:
        fetch_referrer_blob(store, d, digest)


def test_referrer_found_by_its_tag_when_the_fallback_index_lost_it(registry: RegistryServer,
                                                                   tmp_path: Path) -> None:
    store, digest = _model(tmp_path, f"{registry.host}/models/lost:v1")
    subject = subject_of(store, digest)
    a = attach(store, subject, artifact_type=ART, blob=b"{}", blob_media_type="application/json")
    # A racing writer overwrote the index without our entry:
    store.put_manifest(json.dumps({"schemaVersion": 2, "manifests": [],
                                   "mediaType": "application/vnd.oci.image.index.v1+json"}
                                  ).encode(), "application/vnd.oci.image.index.v1+json",
                       fallback_tag(digest))
    assert [d.digest for d in list_referrers(store, digest)] == [a.descriptor.digest]


def test_referrer_of_another_model_is_refused_when_fetched(registry: RegistryServer,
                                                            tmp_path: Path) -> None:
    store, digest = _model(tmp_path, f"{registry.host}/models/a:v1")
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.bin").write_bytes(b"other")
    r2 = parse_ref(f"{registry.host}/models/a:v2")
    d2 = push(other, store, r2, ModelMetadata({"name": "o"})).digest
    a = attach(store, subject_of(store, d2), artifact_type=ART, blob=b"{}",
               blob_media_type="application/json")
    from modelseal.errors import StoreError

    with pytest.raises(StoreError, match="not " + digest):
        fetch_referrer_blob(store, a.descriptor, digest)




def test_registry_with_referrers_api_is_read_through_it(registry: RegistryServer,
                                                        tmp_path: Path) -> None:
    from referrers_standin import ReferrersStandin

    with ReferrersStandin(registry.url) as standin:
        store, digest = _model(tmp_path, f"{standin.host}/models/api:v1")
        subject = subject_of(store, digest)
        mine = {attach(store, subject, artifact_type=ART, blob=b'{"n": %d}' % i,
                       blob_media_type="application/json").descriptor.digest for i in range(3)}
        api = store.referrers_api(digest)
        assert api is not None and {d.digest for d in api} == mine
        assert all(d.artifact_type == ART for d in api)
        # With the API there is no fallback index to maintain...
        assert store.resolve(fallback_tag(digest)) is None
        # ...and discovery reads the API.
        standin.requests.clear()
        assert {d.digest for d in list_referrers(store, digest, ART)} == mine
        assert any("/referrers/" in path for _, path in standin.requests)


def _index_digests(store: Store, subject_digest: str) -> set[str]:
    raw, _, _ = store.get_manifest(fallback_tag(subject_digest))
    return {m["digest"] for m in json.loads(raw)["manifests"]}


def test_deleted_referrer_does_not_block_later_attaches(registry: RegistryServer,
                                                        tmp_path: Path) -> None:
    """Distribution 2.8 refuses an index listing a manifest it no longer has ("blob
    unknown"): one deleted referrer must not keep every later attestation out of the index."""
    store, digest = _model(tmp_path, f"{registry.host}/models/deleted:v1")
    subject = subject_of(store, digest)
    first = [attach(store, subject, artifact_type=ART, blob=b'{"n": %d}' % i,
                    blob_media_type="application/json") for i in range(3)]
    gone = first[1].descriptor.digest
    store.delete_manifest(gone)  # type: ignore[attr-defined]
    later = attach(store, subject, artifact_type=ART, blob=b'{"n": 9}',
                   blob_media_type="application/json")
    assert later.indexed
    listed = _index_digests(store, digest)
    assert gone not in listed
    assert listed == {first[0].descriptor.digest, first[2].descriptor.digest,
                      later.descriptor.digest}
    assert {d.digest for d in list_referrers(store, digest, ART)} == listed


def test_deleted_foreign_referrer_does_not_block_later_attaches(registry: RegistryServer,
                                                                tmp_path: Path) -> None:
    """Another tool's index entries have no tag of ours: a deleted one is dropped after a
    lookup, a live one is kept."""
    from modelseal._util.json import canonical_json
    from modelseal.formats import EMPTY_JSON, INDEX_V1, MANIFEST_V1

    store, digest = _model(tmp_path, f"{registry.host}/models/foreign:v1")
    subject = subject_of(store, digest)
    empty = store.put_blob_bytes(EMPTY_JSON)
    foreign = []
    for i in range(2):
        layer = store.put_blob_bytes(b"oras note %d" % i)
        raw = canonical_json({
            "schemaVersion": 2, "mediaType": MANIFEST_V1, "artifactType": "application/x-oras",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty,
                       "size": 2},
            "layers": [{"mediaType": "text/plain", "digest": layer, "size": 12}],
            "subject": subject.to_dict()})
        foreign.append({"mediaType": MANIFEST_V1, "digest": store.put_manifest(raw, MANIFEST_V1),
                        "size": len(raw), "artifactType": "application/x-oras"})
    store.put_manifest(canonical_json({"schemaVersion": 2, "mediaType": INDEX_V1,
                                       "manifests": foreign}), INDEX_V1, fallback_tag(digest))
    store.delete_manifest(foreign[0]["digest"])  # type: ignore[attr-defined]
    later = attach(store, subject, artifact_type=ART, blob=b"{}",
                   blob_media_type="application/json")
    assert later.indexed
    assert _index_digests(store, digest) == {foreign[1]["digest"], later.descriptor.digest}


def _bundles(tmp_path: Path, digest: str, n: int) -> list[Path]:
    from modelseal.attest.bundle import sign_statement
    from modelseal.attest.statement import statement
    from pipeline_fixtures import make_functionaries

    signer = make_functionaries(tmp_path, ["alice"])["alice"].signer
    out = []
    for i in range(n):
        st = statement([("model", digest)], f"https://example.com/note/v{i}", {"n": i})
        p = tmp_path / f"note{i}.sigstore.json"
        p.write_bytes(sign_statement(st, signer))
        out.append(p)
    return out


CLI = [sys.executable, "-m", "modelseal.cli"]


def test_attach_json_says_whether_the_fallback_index_lists_the_referrer(
        registry: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelseal.attest.attachments import attach_bundles
    from modelseal.oci import referrers

    store, digest = _model(tmp_path, f"{registry.host}/models/indexed:v1")
    first, second = _bundles(tmp_path, digest, 2)
    proc = subprocess.run([*CLI, "attach", f"{registry.host}/models/indexed:v1", str(first),
                           "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    attached = json.loads(proc.stdout)["attached"]
    assert [a["indexed"] for a in attached] == [True]
    assert _index_digests(store, digest) == {attached[0]["digest"]}
    # An index too full for it: attached and tagged (found), but not indexed, and it says so.
    monkeypatch.setattr(referrers, "MAX_INDEX_BYTES", 100)
    out = attach_bundles(store, subject_of(store, digest), [second])
    assert [o.indexed for o in out] == [False]
    assert out[0].to_dict()["indexed"] is False
    assert out[0].digest in {d.digest for d in list_referrers(store, digest)}


def test_attestations_lists_unreadable_referrers_with_a_reason(registry: RegistryServer,
                                                              tmp_path: Path) -> None:
    """One altered and one deleted bundle blob must not hide the others: each is listed,
    the unreadable ones with why (exit 0), instead of the command stopping at the first."""
    import requests

    from modelseal.formats import BUNDLE_MEDIA_TYPE
    from registry_server import blob_path

    ref = f"{registry.host}/models/unreadable:v1"
    store, digest = _model(tmp_path, ref)
    proc = subprocess.run([*CLI, "attach", ref, *map(str, _bundles(tmp_path, digest, 3)),
                           "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    refs = list_referrers(store, digest, BUNDLE_MEDIA_TYPE)
    layers = [json.loads(store.get_manifest(d.digest)[0])["layers"][0]["digest"] for d in refs]
    altered = blob_path(registry.storage_dir, layers[0])
    altered.write_bytes(altered.read_bytes().replace(b"{", b"[", 1))
    resp = requests.delete(f"{registry.url}/v2/models/unreadable/blobs/{layers[1]}", timeout=10)
    assert resp.status_code == 202
    proc = subprocess.run([*CLI, "attestations", ref, "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    listed = {a["digest"]: a for a in json.loads(proc.stdout)["attestations"]}
    assert set(listed) == {d.digest for d in refs}
    assert "error" in listed[refs[0].digest] and "error" in listed[refs[1].digest]
    assert "error" not in listed[refs[2].digest]
    assert listed[refs[2].digest]["signer"]  # the readable one is fetched and decoded
    human = subprocess.run([*CLI, "attestations", ref, "--download", str(tmp_path / "dl")],
                           capture_output=True, text=True)
    assert human.returncode == 0, human.stderr
    assert len(list((tmp_path / "dl").glob("*.sigstore.json"))) == 1


def test_full_fallback_index_abridges_modelseal_entries_before_leaving_any_out(
        registry: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """10,000 referrers with all their annotations (4.8 MiB) do not fit a registry's 4 MiB
    manifest limit: modelseal's own entries are abridged to the predicate type and creation
    time, so every referrer stays listed (nothing to describe through its tag), another
    tool's entry keeps its annotations, and a deleted abridged entry is dropped later."""
    from modelseal._util.json import canonical_json
    from modelseal.formats import (
        ANN_BLOB,
        ANN_CREATED,
        ANN_PREDICATE_TYPE,
        ANN_TRUNCATED,
        EMPTY_JSON,
        INDEX_V1,
        MANIFEST_V1,
    )
    from modelseal.oci import referrers
    from modelseal.oci.store import Descriptor

    store, digest = _model(tmp_path, f"{registry.host}/models/abridged:v1")
    subject = subject_of(store, digest)
    empty = store.put_blob_bytes(EMPTY_JSON)
    layer = store.put_blob_bytes(b"oras note")
    raw = canonical_json({
        "schemaVersion": 2, "mediaType": MANIFEST_V1, "artifactType": "application/x-oras",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty,
                   "size": 2},
        "layers": [{"mediaType": "text/plain", "digest": layer, "size": 9}],
        "subject": subject.to_dict(), "annotations": {"note": "x" * 200}})
    foreign = Descriptor(MANIFEST_V1, store.put_manifest(raw, MANIFEST_V1), len(raw),
                         {"note": "x" * 200}, "application/x-oras")
    store.put_manifest(canonical_json({"schemaVersion": 2, "mediaType": INDEX_V1,
                                       "manifests": [foreign.to_dict()]}),
                       INDEX_V1, fallback_tag(digest))
    anns = {ANN_PREDICATE_TYPE: "https://example.com/scan/v1"}
    made = [attach(store, subject, artifact_type=ART, blob=b'{"n": %d}' % i,
                   blob_media_type="application/json",
                   annotations={**anns, ANN_CREATED: f"2026-01-01T00:00:{i:02d}Z"},
                   update_index=False).descriptor for i in range(12)]
    full = len(referrers._index_bytes([foreign, *made], False))
    slim = len(referrers._index_bytes([foreign, *map(referrers._slim, made)], False))
    assert slim < full - 12 * 100  # the blob digest and more go
    monkeypatch.setattr(referrers, "MAX_INDEX_BYTES", slim + 100)
    referrers.add_to_index(store, digest, made)
    raw_index, _, _ = store.get_manifest(fallback_tag(digest))
    assert len(raw_index) <= slim + 100
    index = json.loads(raw_index)
    assert ANN_TRUNCATED not in index.get("annotations", {})  # all fit, abridged
    entries = {m["digest"]: m for m in index["manifests"]}
    assert set(entries) == {foreign.digest} | {d.digest for d in made}
    assert entries[foreign.digest]["annotations"] == {"note": "x" * 200}
    for d in made:
        assert entries[d.digest]["annotations"] == {
            ANN_PREDICATE_TYPE: "https://example.com/scan/v1",
            ANN_CREATED: d.annotations[ANN_CREATED]}
        assert entries[d.digest]["artifactType"] == ART
    # discovery reads the abridged entries as they are (no manifest fetched per referrer)...
    found = list_referrers(store, digest, ART)
    assert [d.digest for d in found] == [d.digest for d in made]  # oldest first
    assert all(ANN_BLOB not in d.annotations for d in found)
    # ...and reads the bundle through the manifest
    assert json.loads(fetch_referrer_blob(store, found[3], digest)[0]) == {"n": 3}
    # A deleted abridged referrer (no blob annotation to say it is ours) is looked up and
    # dropped by the next attach; the index stays within its bound.
    store.delete_manifest(made[0].digest)  # type: ignore[attr-defined]
    later = attach(store, subject, artifact_type=ART, blob=b'{"n": 99}',
                   blob_media_type="application/json", annotations=anns)
    assert later.indexed
    listed = _index_digests(store, digest)
    assert made[0].digest not in listed
    assert listed == ({foreign.digest, later.descriptor.digest}
                      | {d.digest for d in made[1:]})


def test_fallback_index_that_fits_keeps_every_annotation(registry: RegistryServer,
                                                          tmp_path: Path) -> None:
    """Under the size bound the index holds each manifest's annotations, as OCI 1.1 asks."""
    from modelseal.formats import ANN_BLOB

    store, digest = _model(tmp_path, f"{registry.host}/models/unabridged:v1")
    subject = subject_of(store, digest)
    a = attach(store, subject, artifact_type=ART, blob=b"{}",
               blob_media_type="application/json", annotations={"x": "y"})
    raw, _, _ = store.get_manifest(fallback_tag(digest))
    [entry] = json.loads(raw)["manifests"]
    assert entry["annotations"] == a.descriptor.annotations
    assert ANN_BLOB in entry["annotations"]


def test_attestations_lists_every_one_but_reads_only_the_newest_bundles(
        registry: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """10,000 bundles take 80 s to read from a registry: `attestations` lists every referrer
    from its descriptor and reads the newest (MAX_LISTED_READS) for their claimed signer;
    --read-all and --download read every one."""
    from click.testing import CliRunner

    from modelseal.attest import attachments as att
    from modelseal.cli import main

    ref = f"{registry.host}/models/bounded:v1"
    _, digest = _model(tmp_path, ref)
    proc = subprocess.run([*CLI, "attach", ref, *map(str, _bundles(tmp_path, digest, 3)),
                           "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    monkeypatch.setattr(att, "MAX_LISTED_READS", 1)

    def run(*extra: str) -> dict[str, object]:
        res = CliRunner().invoke(main, ["attestations", ref, "--json", *extra],
                                 catch_exceptions=False)
        assert res.exit_code == 0, res.output
        doc: dict[str, object] = json.loads(res.output)
        return doc

    doc = run()
    listed = doc["attestations"]
    assert isinstance(listed, list) and len(listed) == 3
    assert [a["read"] for a in listed] == [False, False, True]  # oldest first: the newest read
    assert listed[2]["signer"] and listed[0]["signer"] is None
    assert all(a["predicateType"] for a in listed)  # from the (claimed) annotation
    assert doc["unread"] == 2
    for extra in (["--read-all"], ["--download", str(tmp_path / "dl")]):
        doc = run(*extra)
        assert doc["unread"] == 0
        assert all(a["read"] and a["signer"] for a in doc["attestations"])  # type: ignore[attr-defined]
    human = CliRunner().invoke(main, ["attestations", ref], catch_exceptions=False)
    assert human.exit_code == 0, human.output
