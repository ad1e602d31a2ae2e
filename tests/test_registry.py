"""RegistryStore against a real registry (Debian's docker-registry, distribution 2.8)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modelseal._util.json import canonical_json
from modelseal.errors import (
    AuthError,
    DigestMismatchError,
    InputError,
    NotFoundError,
    RegistryUnreachableError,
    StoreError,
    UsageError,
)
from modelseal.formats import EMPTY_DIGEST, EMPTY_JSON, EMPTY_V1, MANIFEST_V1
from modelseal.oci.registry import RegistryOptions, RegistryStore, open_registry_store
from modelseal.refs import parse_ref
from registry_server import RegistryServer, blob_path, free_port

MiB = 1024 * 1024


def make_file(path: Path, size: int) -> tuple[str, int]:
    """Random content written in blocks (never held whole in memory); (digest, size)."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 4 * MiB))
            f.write(block)
            h.update(block)
            left -= len(block)
    return "sha256:" + h.hexdigest(), size


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 * MiB):
            h.update(block)
    return "sha256:" + h.hexdigest()


def manifest_for(layer_digest: str, layer_size: int) -> bytes:
    return canonical_json({
        "schemaVersion": 2, "mediaType": MANIFEST_V1,
        "artifactType": "application/vnd.cncf.model.manifest.v1+json",
        "config": {"mediaType": EMPTY_V1, "digest": EMPTY_DIGEST, "size": 2},
        "layers": [{"mediaType": "application/vnd.cncf.model.weight.v1.raw",
                    "digest": layer_digest, "size": layer_size}],
    })


def test_blob_round_trip_is_byte_identical(registry: RegistryServer, tmp_path: Path) -> None:
    src = tmp_path / "w.bin"
    digest, size = make_file(src, 3 * MiB + 17)
    store = RegistryStore(registry.host, "models/small")
    sent: list[int] = []
    assert store.put_blob_file(src, digest, size, sent.append) is True
    assert sum(sent) == size
    assert store.has_blob(digest)
    out = io.BytesIO()
    got: list[int] = []
    store.fetch_blob(digest, size, out, got.append)
    assert out.getvalue() == src.read_bytes()
    assert sum(got) == size
    assert store.get_blob_bytes(digest) == src.read_bytes()


def test_existing_blob_is_skipped_with_head(registry: RegistryServer, tmp_path: Path) -> None:
    src = tmp_path / "w.bin"
    digest, size = make_file(src, 1 * MiB)
    store = RegistryStore(registry.host, "models/skip")
    assert store.put_blob_file(src, digest, size) is True
    sent: list[int] = []
    assert store.put_blob_file(src, digest, size, sent.append) is False
    assert sent == []


@pytest.mark.parametrize("mode", ["monolithic", "chunked", "auto"])
def test_upload_modes(registry: RegistryServer, tmp_path: Path, mode: str) -> None:
    src = tmp_path / "w.bin"
    digest, size = make_file(src, 5 * MiB + 123)
    store = RegistryStore(registry.host, f"models/{mode}", upload_mode=mode,  # type: ignore[arg-type]
                          chunk_size=1 * MiB)
    sent: list[int] = []
    assert store.put_blob_file(src, digest, size, sent.append)
    assert sum(sent) == size
    assert blob_path(registry.storage_dir, digest).read_bytes() == src.read_bytes()


def test_small_blob_from_memory(registry: RegistryServer) -> None:
    store = RegistryStore(registry.host, "models/mem")
    assert store.put_blob_bytes(EMPTY_JSON) == EMPTY_DIGEST
    assert store.put_blob_bytes(EMPTY_JSON) == EMPTY_DIGEST
    assert store.get_blob_bytes(EMPTY_DIGEST) == EMPTY_JSON


@pytest.mark.slow
def test_large_blob_streams_in_constant_memory(registry: RegistryServer, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    digest, size = make_file(src, 130 * MiB + 5)
    store = RegistryStore(registry.host, "models/big")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    assert store.put_blob_file(src, digest, size)
    dest = tmp_path / "back.bin"
    with open(dest, "wb") as out:
        store.fetch_blob(digest, size, out)
    growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert file_digest(dest) == digest
    assert dest.stat().st_size == size
    assert growth_mib < 40, f"peak RSS grew by {growth_mib:.0f} MiB for a 130 MiB blob"


def test_cross_repository_mount(registry: RegistryServer, tmp_path: Path) -> None:
    src = tmp_path / "w.bin"
    digest, size = make_file(src, 2 * MiB)
    RegistryStore(registry.host, "team-a/model").put_blob_file(src, digest, size)
    other = RegistryStore(registry.host, "team-b/model", mount_from=("team-a/model",))
    assert not other.has_blob(digest)
    sent: list[int] = []
    assert other.put_blob_file(src, digest, size, sent.append) is True
    assert sent == []  # mounted: no byte sent
    assert other.has_blob(digest)
    # a mount source without the blob falls back to a normal upload
    third = RegistryStore(registry.host, "team-c/model")
    assert third.put_blob_file(src, digest, size, sent.append, mount_from=("nowhere/x",))
    assert sum(sent) == size


def test_manifest_put_get_resolve_and_tags(registry: RegistryServer, tmp_path: Path) -> None:
    store = RegistryStore(registry.host, "models/manifests")
    src = tmp_path / "w.bin"
    digest, size = make_file(src, 1000)
    store.put_blob_file(src, digest, size)
    store.put_blob_bytes(EMPTY_JSON)
    data = manifest_for(digest, size)
    mdigest = store.put_manifest(data, MANIFEST_V1, "v1")
    assert mdigest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert store.resolve("v1") == mdigest
    assert store.resolve(mdigest) == mdigest
    assert store.resolve("missing") is None
    raw, media_type, got = store.get_manifest("v1")
    assert (raw, media_type, got) == (data, MANIFEST_V1, mdigest)
    assert store.get_manifest(mdigest)[0] == data
    with pytest.raises(NotFoundError):
        store.get_manifest("missing")
    assert store.put_manifest(data, MANIFEST_V1, None) == mdigest  # by digest
    store.tags_page_size = 2
    for tag in ("v2", "v3", "latest", "z"):
        store.put_manifest(data, MANIFEST_V1, tag)
    assert sorted(store.list_tags()) == ["latest", "v1", "v2", "v3", "z"]
    assert RegistryStore(registry.host, "never/pushed").list_tags() == []


def test_referrers_api_is_none_on_distribution_2_8(registry: RegistryServer) -> None:
    store = RegistryStore(registry.host, "models/ref")
    store.put_blob_bytes(EMPTY_JSON)
    data = canonical_json({"schemaVersion": 2, "mediaType": MANIFEST_V1,
                           "config": {"mediaType": EMPTY_V1, "digest": EMPTY_DIGEST, "size": 2},
                           "layers": []})
    subject = store.put_manifest(data, MANIFEST_V1, "s")
    assert store.referrers_api(subject) is None


def test_fetch_refuses_blob_swapped_in_registry(registry: RegistryServer, tmp_path: Path) -> None:
    src = tmp_path / "w.bin"
    digest, size = make_file(src, 2 * MiB)
    store = RegistryStore(registry.host, "models/tamper")
    store.put_blob_file(src, digest, size)
    stored = blob_path(registry.storage_dir, digest)
    tampered = bytearray(stored.read_bytes())
    tampered[1000] ^= 0xFF
    stored.write_bytes(bytes(tampered))
    with pytest.raises(DigestMismatchError) as e:
        store.fetch_blob(digest, size, io.BytesIO())
    assert digest in str(e.value) and registry.host in str(e.value)
    stored.write_bytes(bytes(tampered) + b"more")  # longer than the manifest says
    with pytest.raises(DigestMismatchError):
        store.fetch_blob(digest, size, io.BytesIO())
    with pytest.raises(DigestMismatchError):
        store.get_blob_bytes(digest)


def test_get_manifest_refuses_manifest_swapped_in_registry(registry: RegistryServer) -> None:
    store = RegistryStore(registry.host, "models/tamper-manifest")
    store.put_blob_bytes(EMPTY_JSON)
    data = canonical_json({"schemaVersion": 2, "mediaType": MANIFEST_V1,
                           "config": {"mediaType": EMPTY_V1, "digest": EMPTY_DIGEST, "size": 2},
                           "layers": [], "annotations": {"a": "1"}})
    mdigest = store.put_manifest(data, MANIFEST_V1, "v1")
    blob_path(registry.storage_dir, mdigest).write_bytes(data.replace(b'"1"', b'"2"'))
    with pytest.raises(DigestMismatchError):
        store.get_manifest(mdigest)
    with pytest.raises(DigestMismatchError):
        store.get_manifest("v1")


def test_upload_refuses_file_changed_since_hashing(registry: RegistryServer,
                                                   tmp_path: Path) -> None:
    src = tmp_path / "w.bin"
    digest, size = make_file(src, 1 * MiB)
    store = RegistryStore(registry.host, "models/changed")
    with pytest.raises(InputError):
        store.put_blob_file(src, digest, size + 1)
    src.write_bytes(os.urandom(size))  # same size, other content
    with pytest.raises(DigestMismatchError):
        store.put_blob_file(src, digest, size)
    assert not store.has_blob(digest)


def test_registry_stopped_mid_upload_then_next_push_completes(registry: RegistryServer,
                                                             tmp_path: Path) -> None:
    src = tmp_path / "w.bin"
    digest, size = make_file(src, 64 * MiB)
    store = RegistryStore(registry.host, "models/crash", retries=2)

    def kill_midway(_n: int) -> None:
        if registry.running:
            registry.kill()

    with pytest.raises(RegistryUnreachableError) as e:
        store.put_blob_file(src, digest, size, kill_midway)
    assert registry.host in str(e.value)
    assert not blob_path(registry.storage_dir, digest).exists()
    registry.start()
    sent: list[int] = []
    assert store.put_blob_file(src, digest, size, sent.append) is True
    out = tmp_path / "back.bin"
    with open(out, "wb") as f:
        store.fetch_blob(digest, size, f)
    assert file_digest(out) == digest


def test_unreachable_registry_is_a_clear_error() -> None:
    host = f"127.0.0.1:{free_port()}"
    store = RegistryStore(host, "models/x", retries=2)
    with pytest.raises(RegistryUnreachableError) as e:
        store.has_blob(EMPTY_DIGEST)
    assert f"cannot reach registry {host}: connection refused" in str(e.value)


# -- TLS and authentication -------------------------------------------------------------------


def auth_store(reg: RegistryServer, **kw: object) -> RegistryStore:
    kw.setdefault("ca_file", str(reg.ca_file))
    return RegistryStore(reg.host, "secure/model", **kw)  # type: ignore[arg-type]


def test_tls_and_password_round_trip(auth_registry: RegistryServer, tmp_path: Path) -> None:
    src = tmp_path / "w.bin"
    digest, size = make_file(src, 3 * MiB)
    store = auth_store(auth_registry, username=auth_registry.username,
                       password=auth_registry.password)
    assert store.put_blob_file(src, digest, size)
    out = io.BytesIO()
    store.fetch_blob(digest, size, out)
    assert out.getvalue() == src.read_bytes()
    chunked = auth_store(auth_registry, username=auth_registry.username,
                         password=auth_registry.password, upload_mode="chunked",
                         chunk_size=1 * MiB)
    src2 = tmp_path / "w2.bin"
    digest2, size2 = make_file(src2, 3 * MiB + 1)
    assert chunked.put_blob_file(src2, digest2, size2)


def test_wrong_password_is_refused_clearly(auth_registry: RegistryServer) -> None:
    store = auth_store(auth_registry, username=auth_registry.username, password="wrong")
    with pytest.raises(AuthError) as e:
        store.has_blob(EMPTY_DIGEST)
    msg = str(e.value)
    assert auth_registry.host in msg and "refused the credentials" in msg


def test_missing_credentials_are_refused_clearly(auth_registry: RegistryServer,
                                                 tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))  # no config.json there
    with pytest.raises(AuthError) as e:
        auth_store(auth_registry).resolve("latest")
    msg = str(e.value)
    assert auth_registry.host in msg and "no credentials" in msg and "docker login" in msg


def test_tls_without_the_ca_is_a_clear_error(auth_registry: RegistryServer) -> None:
    store = RegistryStore(auth_registry.host, "secure/model", insecure=False,
                          username=auth_registry.username, password=auth_registry.password)
    with pytest.raises(RegistryUnreachableError) as e:
        store.has_blob(EMPTY_DIGEST)
    assert "certificate verify failed" in str(e.value)
    assert "--ca-file" in str(e.value)


def test_credentials_from_docker_config(auth_registry: RegistryServer, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    auth = base64.b64encode(f"{auth_registry.username}:{auth_registry.password}".encode())
    (tmp_path / "config.json").write_text(json.dumps(
        {"auths": {auth_registry.host: {"auth": auth.decode()}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    store = auth_store(auth_registry)
    assert store.put_blob_bytes(EMPTY_JSON) == EMPTY_DIGEST
    assert store.has_blob(EMPTY_DIGEST)
    before = (tmp_path / "config.json").read_text()
    assert (tmp_path / "config.json").read_text() == before  # never written


def test_credentials_from_credential_helper(auth_registry: RegistryServer, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-modelsealtest"
    answer = json.dumps({"ServerURL": auth_registry.host, "Username": auth_registry.username,
                         "Secret": auth_registry.password})
    helper.write_text(f"#!/bin/sh\nread host\n[ \"$host\" = \"{auth_registry.host}\" ] "
                      f"|| {{ echo 'credentials not found in native keychain'; exit 1; }}\n"
                      f"echo '{answer}'\n")
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    cfgdir = tmp_path / "docker"
    cfgdir.mkdir()
    (cfgdir / "config.json").write_text(json.dumps({"credsStore": "modelsealtest"}))
    store = auth_store(auth_registry, docker_config=str(cfgdir / "config.json"))
    assert store.put_blob_bytes(EMPTY_JSON) == EMPTY_DIGEST
    (cfgdir / "config.json").write_text(json.dumps(
        {"credHelpers": {auth_registry.host: "modelsealtest"}}))
    store = auth_store(auth_registry, docker_config=str(cfgdir / "config.json"))
    assert store.has_blob(EMPTY_DIGEST)


def test_open_registry_store_from_ref(registry: RegistryServer) -> None:
    ref = parse_ref(f"{registry.host}/org/model:v1")
    store = open_registry_store(ref, RegistryOptions(upload_mode="chunked"))
    assert store.describe() == f"{registry.host}/org/model"
    assert store.scheme == "http"
    assert store.resolve("v1") is None
    remote = open_registry_store(parse_ref("registry.example.com/org/model:v1"))
    assert remote.scheme == "https"
    assert open_registry_store(parse_ref("registry.example.com/m:v1"),
                               RegistryOptions(insecure=True)).scheme == "http"
    with pytest.raises(UsageError):
        open_registry_store(parse_ref("oci:/tmp/x:v1"))


def test_bearer_token_auth_round_trip(token_registry: RegistryServer, tmp_path: Path) -> None:
    src = tmp_path / "w.bin"
    digest, size = make_file(src, 3 * MiB)
    store = RegistryStore(token_registry.host, "tok/model", username=token_registry.username,
                          password=token_registry.password)
    assert store.put_blob_file(src, digest, size)
    out = io.BytesIO()
    store.fetch_blob(digest, size, out)
    assert out.getvalue() == src.read_bytes()
    data = manifest_for(digest, size)
    store.put_blob_bytes(EMPTY_JSON)
    assert store.resolve(store.put_manifest(data, MANIFEST_V1, "v1")) is not None
    assert store.list_tags() == ["v1"]
    assert token_registry.token_server is not None
    reqs = token_registry.token_server.requests
    assert reqs and all(r["authorization"] == "Basic" for r in reqs)
    assert any("push" in r.get("scope", "") for r in reqs)


def test_bearer_wrong_password_is_refused_clearly(token_registry: RegistryServer) -> None:
    store = RegistryStore(token_registry.host, "tok/model", username="modelseal",
                          password="nope")
    with pytest.raises(AuthError) as e:
        store.has_blob(EMPTY_DIGEST)
    assert "refused the credentials" in str(e.value)


def _uploads_left(registry: RegistryServer, repo: str) -> list[str]:
    d = registry.storage_dir / "docker/registry/v2/repositories" / repo / "_uploads"
    return sorted(str(p) for p in d.rglob("data")) if d.exists() else []


def _chunks(data: bytes, n: int) -> Iterator[bytes]:
    for i in range(0, len(data), n):
        yield data[i:i + n]


@pytest.mark.parametrize("mode", ["auto", "monolithic", "chunked"])
def test_streamed_upload_round_trip(registry: RegistryServer, mode: str) -> None:
    data = os.urandom(5 * MiB + 3)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    store = RegistryStore(registry.host, "models/stream", upload_mode=mode,  # type: ignore[arg-type]
                          chunk_size=2 * MiB)
    sent: list[int] = []
    assert store.put_blob_stream(_chunks(data, 1_000_003), digest, len(data), sent.append)
    assert sum(sent) == len(data)
    assert store.get_blob_bytes(digest) == data
    untouched = iter([b"never read"])
    assert store.put_blob_stream(untouched, digest, len(data)) is False  # present already
    assert next(untouched) == b"never read"
    empty = "sha256:" + hashlib.sha256(b"").hexdigest()
    assert store.put_blob_stream(iter([]), empty, 0) and store.has_blob(empty)


@pytest.mark.parametrize("mode", ["monolithic", "chunked"])
@pytest.mark.parametrize("bad", ["altered", "short", "long"])
def test_streamed_upload_refuses_content_that_is_not_the_digest(
        registry: RegistryServer, mode: str, bad: str) -> None:
    """A source serving other bytes than its digest names: checked before the last byte
    leaves, nothing is stored, and the upload session is cancelled (DELETE)."""
    from fault_proxy import FaultProxy

    data = os.urandom(3 * MiB)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    served = {"altered": data[:-1] + bytes([data[-1] ^ 1]), "short": data[:-10],
              "long": data + b"x"}[bad]
    with FaultProxy(registry.url) as proxy:
        store = RegistryStore(proxy.host, "models/badstream", upload_mode=mode,  # type: ignore[arg-type]
                              chunk_size=MiB)
        with pytest.raises(DigestMismatchError):
            store.put_blob_stream(_chunks(served, 512 * 1024), digest, len(data))
        assert proxy.seen("DELETE", "/blobs/uploads/") == 1
    assert not RegistryStore(registry.host, "models/badstream").has_blob(digest)


@pytest.mark.parametrize("mode", ["monolithic", "chunked"])
def test_streamed_upload_is_cancelled_when_the_source_fails(registry: RegistryServer,
                                                            mode: str) -> None:
    data = os.urandom(3 * MiB)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    def failing(after: int) -> Iterator[bytes]:
        if after:
            yield data[:after]
        raise StoreError("the source registry went away")

    store = RegistryStore(registry.host, "models/failstream", upload_mode=mode,  # type: ignore[arg-type]
                          chunk_size=MiB)
    with pytest.raises(StoreError, match="went away"):
        store.put_blob_stream(failing(0), digest, len(data))
    assert _uploads_left(registry, "models/failstream") == []  # cancelled, nothing kept
    with pytest.raises(StoreError, match="went away"):
        store.put_blob_stream(failing(MiB + 5), digest, len(data))
    assert not store.has_blob(digest)


def test_mount_blob_links_without_sending(registry: RegistryServer, tmp_path: Path) -> None:
    src = tmp_path / "w.bin"
    digest, size = make_file(src, MiB)
    RegistryStore(registry.host, "team-a/m").put_blob_file(src, digest, size)
    b = RegistryStore(registry.host, "team-b/m")
    assert b.mount_blob(digest, "team-a/m") is True and b.has_blob(digest)
    c = RegistryStore(registry.host, "team-c/m")
    assert c.mount_blob(digest, "nowhere/x") is False and not c.has_blob(digest)
    assert _uploads_left(registry, "team-c/m") == []  # the session it opened was cancelled


def _built(model: Path, epoch: int) -> object:
    from modelseal.modelpack import ModelMetadata
    from modelseal.transfer import package

    old = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = str(epoch)
    try:
        return package(model, ModelMetadata({"name": "same"}))[0]
    finally:
        if old is None:
            del os.environ["SOURCE_DATE_EPOCH"]
        else:
            os.environ["SOURCE_DATE_EPOCH"] = old


def _same_model(store: RegistryStore, built: Any) -> Callable[[str], bool]:
    """The judgement push gives ``put_manifest_exclusive``: same layers and config, creation
    time aside (``modelpack.content_key``)."""
    from modelseal.modelpack import content_key

    def same(digest: str) -> bool:
        raw, _, _ = store.get_manifest(digest)
        config = store.get_blob_bytes(json.loads(raw)["config"]["digest"])
        return bool(content_key(raw, config) == content_key(built.manifest_bytes,
                                                             built.config_bytes))

    return same


def test_same_model_pushed_again_with_another_creation_time_is_no_tag_conflict(
        registry: RegistryServer, tmp_path: Path) -> None:
    from modelseal.errors import TagConflictError

    model = tmp_path / "m"
    model.mkdir()
    (model / "w.bin").write_bytes(os.urandom(1000))
    store = RegistryStore(registry.host, "models/same")
    a, b = _built(model, 1_700_000_000), _built(model, 1_700_000_999)
    assert a.manifest_digest != b.manifest_digest  # type: ignore[attr-defined]
    for built in (a, b):
        store.put_blob_file(model / "w.bin", built.layers[0].digest, 1000)  # type: ignore[attr-defined]
        store.put_blob_bytes(built.config_bytes)  # type: ignore[attr-defined]
    first = store.put_manifest_exclusive(a.manifest_bytes, MANIFEST_V1, "v1")  # type: ignore[attr-defined]
    assert store.put_manifest_exclusive(b.manifest_bytes, MANIFEST_V1, "v1",  # type: ignore[attr-defined]
                                        same_content=_same_model(store, b)) == first
    assert store.resolve("v1") == first
    (model / "w.bin").write_bytes(os.urandom(1000))  # other content: still a conflict
    c = _built(model, 1_700_000_000)
    store.put_blob_file(model / "w.bin", c.layers[0].digest, 1000)  # type: ignore[attr-defined]
    store.put_blob_bytes(c.config_bytes)  # type: ignore[attr-defined]
    with pytest.raises(TagConflictError):
        store.put_manifest_exclusive(c.manifest_bytes, MANIFEST_V1, "v1",  # type: ignore[attr-defined]
                                     same_content=_same_model(store, c))


def test_concurrent_pushes_of_the_same_model_all_succeed(registry: RegistryServer,
                                                         tmp_path: Path) -> None:
    """CI retries and parallel jobs push one model to one tag at once: the creation time
    differs, the content does not, so none of them may fail with a tag conflict (exit 5)."""
    import subprocess
    import sys

    model = tmp_path / "m"
    model.mkdir()
    (model / "w.bin").write_bytes(os.urandom(4000))
    ref = f"{registry.host}/models/samerace:v1"
    procs = [subprocess.Popen([sys.executable, "-m", "modelseal.cli", "push", str(model), ref,
                               "--no-cache", "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "SOURCE_DATE_EPOCH": str(1_700_000_000 + i)})
             for i in range(6)]
    results = [(p.wait(timeout=120), p.stdout.read() if p.stdout else "",
                p.stderr.read() if p.stderr else "") for p in procs]
    assert [rc for rc, _, _ in results] == [0] * 6, [err[-300:] for _, _, err in results]
    tagged = RegistryStore(registry.host, "models/samerace").resolve("v1")
    assert tagged in {json.loads(out)["digest"] for _, out, _ in results}
