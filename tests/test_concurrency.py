"""Concurrent writers against a real registry (Debian's docker-registry, no referrers API):
32 and 64 `modelseal attach` processes on one model lose nothing and fail nothing; two pushes
of different content to one tag never both succeed silently; the fallback referrers index
stays under the registry's manifest limit and a full index fails no attach."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from modelseal import transfer
from modelseal._util.json import canonical_json as cj
from modelseal.attest.attachments import subject_of
from modelseal.attest.bundle import sign_statement
from modelseal.attest.signers import keygen, load_signer
from modelseal.errors import StoreError, TagConflictError
from modelseal.formats import (
    ANN_CREATED,
    ANN_TRUNCATED,
    EMPTY_DIGEST,
    EMPTY_JSON,
    EMPTY_V1,
    INDEX_V1,
    MANIFEST_V1,
)
from modelseal.modelpack import ModelMetadata
from modelseal.oci import open_store, referrers
from modelseal.oci.referrers import attach, fallback_tag, list_referrers
from modelseal.oci.registry import RegistryStore
from modelseal.refs import parse_ref
from registry_server import RegistryServer

CLI = [sys.executable, "-m", "modelseal.cli"]
BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
NOTE = "application/vnd.example.note.v1+json"


def _push_model(registry: RegistryServer, tmp_path: Path, repo: str) -> tuple[str, str]:
    src = tmp_path / "model"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(4096))
    ref_text = f"{registry.host}/{repo}:v1"
    ref = parse_ref(ref_text)
    return ref_text, transfer.push(src, open_store(ref), ref, ModelMetadata({"name": "m"})).digest


def _bundles(tmp_path: Path, digest: str, n: int) -> list[Path]:
    (tmp_path / "keys").mkdir()
    priv, _ = keygen(tmp_path / "keys" / "ci")
    signer = load_signer(str(priv))
    out = []
    for i in range(n):
        statement = {"_type": "https://in-toto.io/Statement/v1",
                     "subject": [{"name": "model", "digest": {"sha256": digest[7:]}}],
                     "predicateType": "https://example.com/ci-note/v1",
                     "predicate": {"job": i}}
        p = tmp_path / "bundles" / f"{i}.sigstore.json"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(sign_statement(statement, signer))
        out.append(p)
    return out


@pytest.mark.parametrize("attachers", [32, 64])
def test_concurrent_attach_processes_lose_nothing_and_fail_nothing(
        registry: RegistryServer, tmp_path: Path, attachers: int) -> None:
    ref_text, digest = _push_model(registry, tmp_path, f"models/crowd{attachers}")
    bundles = _bundles(tmp_path, digest, attachers)
    procs = [subprocess.Popen([*CLI, "--timeout", "30", "attach", f"{ref_text}", str(b),
                               "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for b in bundles]
    results = [(p.wait(timeout=300), p.stdout.read() if p.stdout else "",
                p.stderr.read() if p.stderr else "") for p in procs]
    failed = [(rc, err[-400:]) for rc, _, err in results if rc != 0]
    assert failed == []
    attached = {json.loads(out)["attached"][0]["digest"] for _, out, _ in results}
    assert len(attached) == attachers
    store = open_store(parse_ref(ref_text))
    found = {d.digest for d in list_referrers(store, digest, BUNDLE)}
    assert attached <= found  # 0 lost
    raw, _, _ = store.get_manifest(fallback_tag(digest))
    assert json.loads(raw)["mediaType"] == INDEX_V1


def _exclusive_writer(args: tuple[str, str, int, Any]) -> tuple[str, str, str | None]:
    host, repo, i, barrier = args
    store = RegistryStore(host, repo)
    layer = f"writer {i}".encode()
    layer_digest = store.put_blob_bytes(layer)
    store.put_blob_bytes(EMPTY_JSON)
    manifest = cj({"schemaVersion": 2, "mediaType": MANIFEST_V1,
                   "config": {"mediaType": EMPTY_V1, "digest": EMPTY_DIGEST, "size": 2},
                   "layers": [{"mediaType": "application/octet-stream",
                               "digest": layer_digest, "size": len(layer)}]})
    mine = "sha256:" + hashlib.sha256(manifest).hexdigest()
    barrier.wait()
    try:
        store.put_manifest_exclusive(manifest, MANIFEST_V1, "release")
        return "won", mine, None
    except TagConflictError as e:
        return "lost", mine, e.message


def test_racing_pushes_to_one_tag_never_both_succeed(registry: RegistryServer) -> None:
    n = 6
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Manager().Barrier(n)
    with ctx.Pool(n) as pool:
        results = pool.map(_exclusive_writer,
                           [(registry.host, "models/race", i, barrier) for i in range(n)])
    winners = [mine for state, mine, _ in results if state == "won"]
    assert len(winners) == 1, results
    assert RegistryStore(registry.host, "models/race").resolve("release") == winners[0]
    for state, mine, message in results:
        if state == "lost":  # the loser's report names both digests
            assert message is not None and mine in message and message.count("sha256:") >= 2


def test_exclusive_tag_write_refuses_a_tag_taken_meanwhile(registry: RegistryServer) -> None:
    store = RegistryStore(registry.host, "models/taken")
    store.put_blob_bytes(EMPTY_JSON)
    first = cj({"schemaVersion": 2, "mediaType": MANIFEST_V1, "annotations": {"n": "1"},
                "config": {"mediaType": EMPTY_V1, "digest": EMPTY_DIGEST, "size": 2},
                "layers": []})
    second = first.replace(b'"n":"1"', b'"n":"2"')
    d1 = store.put_manifest(first, MANIFEST_V1, "v1")
    with pytest.raises(TagConflictError) as e:
        store.put_manifest_exclusive(second, MANIFEST_V1, "v1")
    assert d1 in e.value.message and e.value.exit_code == 5
    assert store.resolve("v1") == d1
    assert store.put_manifest_exclusive(first, MANIFEST_V1, "v1") == d1  # same content: fine


def test_racing_cli_pushes_to_one_tag_report_the_lost_race(registry: RegistryServer,
                                                           tmp_path: Path) -> None:
    dirs = []
    for i in range(6):
        d = tmp_path / f"m{i}"
        d.mkdir()
        (d / "w.bin").write_bytes(os.urandom(1000))
        dirs.append(d)
    ref = f"{registry.host}/models/pushrace:v1"
    procs = [subprocess.Popen([*CLI, "push", str(d), ref, "--no-cache", "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for d in dirs]
    codes = [p.wait(timeout=120) for p in procs]
    assert sorted(set(codes)) in ([0], [0, 5])
    assert codes.count(0) == 1


def test_full_fallback_index_stays_under_the_limit_and_fails_no_attach(
        registry: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(referrers, "MAX_INDEX_BYTES", 6000)
    ref_text, digest = _push_model(registry, tmp_path, "models/many")
    store = open_store(parse_ref(ref_text))
    subject = subject_of(store, digest)
    # distinct creation times (attaches within one second would tie, and ties are broken by
    # digest): the index must keep the newest
    made = [attach(store, subject, artifact_type=NOTE, blob=json.dumps({"n": i}).encode(),
                   blob_media_type="application/json",
                   annotations={ANN_CREATED: f"2026-01-01T00:00:{i:02d}Z"}) for i in range(30)]
    assert made[-1].indexed
    raw, _, _ = store.get_manifest(fallback_tag(digest))
    index = json.loads(raw)
    assert len(raw) <= 6000
    assert index["annotations"][ANN_TRUNCATED] == "true"
    listed = {m["digest"] for m in index["manifests"]}
    assert made[-1].descriptor.digest in listed  # the newest are kept
    assert made[0].descriptor.digest not in listed
    found = {d.digest for d in list_referrers(store, digest, NOTE)}
    assert {a.descriptor.digest for a in made} <= found  # discovery stays complete


def test_fallback_index_at_the_limit_is_accepted_by_the_registry(
        registry: RegistryServer) -> None:
    store = RegistryStore(registry.host, "models/limit")
    store.put_blob_bytes(EMPTY_JSON)
    base = cj({"schemaVersion": 2, "mediaType": MANIFEST_V1,
               "config": {"mediaType": EMPTY_V1, "digest": EMPTY_DIGEST, "size": 2},
               "layers": []})
    digest = store.put_manifest(base, MANIFEST_V1)
    entry = {"mediaType": MANIFEST_V1, "digest": digest, "size": len(base),
             "annotations": {"pad": "x" * 1000}}

    def index(n_bytes: int) -> bytes:
        doc = {"schemaVersion": 2, "mediaType": INDEX_V1, "manifests": [entry]}
        raw = cj(doc)
        doc["annotations"] = {"pad": "y" * (n_bytes - len(raw) - len(',"annotations":{"pad":""}'))}
        out = cj(doc)
        assert len(out) == n_bytes
        return out

    store.put_manifest(index(referrers.MAX_INDEX_BYTES), INDEX_V1, "at-limit")
    with pytest.raises(StoreError):  # what the 10,000-referrer index (4.8 MiB) met
        store.put_manifest(index(int(4.8 * 1024 * 1024)), INDEX_V1, "too-big")
