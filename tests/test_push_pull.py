"""Push and pull ModelPack artifacts on both backends: a real registry and a layout directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from modelseal._util.json import canonical_json
from modelseal.errors import (
    DigestMismatchError,
    InputError,
    StoreError,
    TagConflictError,
    UnsafePathError,
)
from modelseal.formats import ARTIFACT_TYPE, MANIFEST_V1
from modelseal.modelpack import ModelMetadata, validate_config
from modelseal.oci import open_store
from modelseal.oci.store import Store
from modelseal.refs import Ref, parse_ref
from modelseal.transfer import Progress, fetch_model_manifest, pull, push
from registry_server import RegistryServer, blob_path

MD = ModelMetadata({"name": "tiny", "version": "1.0"}, {"format": "safetensors"})


def make_model(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.safetensors").write_bytes(os.urandom(300_000))
    (root / "config.json").write_text('{"hidden": 8}')
    (root / "README.md").write_text("# tiny\n")
    deep = root.joinpath(*[f"d{i}" for i in range(12)])
    deep.mkdir(parents=True)
    (deep / "leaf.bin").write_bytes(b"deep")
    (root / "ünïcødé 名前.txt").write_text("unicode name")
    (root / "empty.bin").write_bytes(b"")
    return root


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


Target = Callable[[str], tuple[Ref, Store]]


@pytest.fixture(params=["oci", "registry"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    """A function tag -> (Ref, Store) on the backend under test."""
    if request.param == "oci":
        def make(tag: str) -> tuple[Ref, Store]:
            ref = parse_ref(f"oci:{tmp_path / 'layout'}:{tag}")
            return ref, open_store(ref)
    else:
        reg: RegistryServer = request.getfixturevalue("registry")

        def make(tag: str) -> tuple[Ref, Store]:
            ref = parse_ref(f"{reg.host}/models/tiny:{tag}")
            return ref, open_store(ref)
    return make


def test_round_trip_is_byte_identical(target: Target, tmp_path: Path) -> None:
    src = make_model(tmp_path / "src")
    ref, store = target("v1")
    result = push(src, store, ref, MD)
    assert result.files == 6
    out = tmp_path / "out"
    pulled = pull(store, ref, out)
    assert pulled.digest == result.digest
    assert tree(out) == tree(src)
    m = fetch_model_manifest(store, ref)
    doc = json.loads(m.raw)
    assert doc["artifactType"] == ARTIFACT_TYPE and doc["mediaType"] == MANIFEST_V1
    roles = {la.filepath: la.media_type for la in m.layers}
    assert roles["model.safetensors"] == "application/vnd.cncf.model.weight.v1.raw"
    assert roles["config.json"] == "application/vnd.cncf.model.weight.config.v1.raw"
    assert roles["README.md"] == "application/vnd.cncf.model.doc.v1.raw"
    config = json.loads(store.get_blob_bytes(m.config.digest))
    validate_config(config)
    assert config["modelfs"]["diffIds"] == [la.digest for la in m.layers]


def test_pushing_same_content_again_is_a_noop(target: Target, tmp_path: Path) -> None:
    src = make_model(tmp_path / "src")
    ref, store = target("v1")
    first = push(src, store, ref, MD)
    again = push(src, store, ref, MD)
    assert again.unchanged and again.digest == first.digest
    assert again.uploaded_blobs == 0


def test_push_refuses_to_move_an_existing_tag(target: Target, tmp_path: Path) -> None:
    src = make_model(tmp_path / "src")
    ref, store = target("v1")
    first = push(src, store, ref, MD)
    (src / "README.md").write_text("# changed\n")
    with pytest.raises(TagConflictError) as e:
        push(src, store, ref, MD)
    assert first.digest in str(e.value)
    assert store.resolve("v1") == first.digest
    moved = push(src, store, ref, MD, allow_retag=True)
    assert store.resolve("v1") == moved.digest != first.digest


def test_push_refuses_empty_directory(target: Target, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    ref, store = target("v1")
    with pytest.raises(InputError, match="nothing to package"):
        push(tmp_path / "empty", store, ref, MD)


def test_push_refuses_symlinks_and_special_files(target: Target, tmp_path: Path) -> None:
    src = make_model(tmp_path / "src")
    ref, store = target("v1")
    os.symlink("/etc/passwd", src / "link")
    with pytest.raises(InputError, match="symbolic link"):
        push(src, store, ref, MD)
    os.unlink(src / "link")
    os.symlink("model.safetensors", src / "alias.safetensors")
    with pytest.raises(InputError, match="symbolic link"):
        push(src, store, ref, MD)
    result = push(src, store, ref, MD, follow_symlinks=True)
    assert result.files == 7
    os.unlink(src / "alias.safetensors")
    os.mkfifo(src / "pipe")
    with pytest.raises(InputError, match="FIFO"):
        push(src, store, ref.with_tag("v2"), MD)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file: requires a normal user")
def test_push_refuses_unreadable_file(target: Target, tmp_path: Path) -> None:
    src = make_model(tmp_path / "src")
    (src / "README.md").chmod(0)
    ref, store = target("v1")
    with pytest.raises(InputError, match="not readable"):
        push(src, store, ref, MD)


def _push_manifest_with_paths(store: Store, paths: list[str]) -> str:
    """Play a malicious publisher: a hand-crafted manifest with the given file paths."""
    blob = b"payload"
    digest = store.put_blob_bytes(blob)
    config = canonical_json({"descriptor": {"name": "evil"}, "config": {},
                             "modelfs": {"type": "layers", "diffIds": [digest] * len(paths)}})
    cfg_digest = store.put_blob_bytes(config)
    manifest = {
        "schemaVersion": 2, "mediaType": MANIFEST_V1, "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": "application/vnd.cncf.model.config.v1+json",
                   "digest": cfg_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.cncf.model.weight.v1.raw", "digest": digest,
                    "size": len(blob), "annotations": {"org.cncf.model.filepath": p}}
                   for p in paths],
    }
    return store.put_manifest(canonical_json(manifest), MANIFEST_V1, "evil")


@pytest.mark.parametrize("paths", [
    ["../escape.bin"], ["a/../../escape.bin"], ["/etc/cron.d/evil"], ["ok.bin", "ok.bin"],
    ["a", "a/b"], ["C:\\evil"],
])
def test_pull_refuses_crafted_manifest_paths(target: Target, tmp_path: Path,
                                             paths: list[str]) -> None:
    ref, store = target("evil")
    _push_manifest_with_paths(store, paths)
    out = tmp_path / "out"
    with pytest.raises(UnsafePathError):
        pull(store, ref, out)
    assert not out.exists()
    assert not (tmp_path / "escape.bin").exists()


def test_pull_refuses_to_write_through_a_symlink(target: Target, tmp_path: Path) -> None:
    src = make_model(tmp_path / "src")
    ref, store = target("v1")
    push(src, store, ref, MD)
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, out / "d0")
    with pytest.raises(UnsafePathError, match="symbolic link"):
        pull(store, ref, out)
    assert list(elsewhere.iterdir()) == []
    assert sorted(p.name for p in out.iterdir()) == ["d0"]


def test_pull_does_not_overwrite_existing_files(target: Target, tmp_path: Path) -> None:
    src = make_model(tmp_path / "src")
    ref, store = target("v1")
    push(src, store, ref, MD)
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("mine")
    with pytest.raises(InputError, match="already exists"):
        pull(store, ref, out)
    assert tree(out) == {"README.md": b"mine"}
    pull(store, ref, out, overwrite=True)
    assert tree(out) == tree(src)


def test_pull_refuses_blob_altered_in_layout_dir(tmp_path: Path) -> None:
    src = make_model(tmp_path / "src")
    ref = parse_ref(f"oci:{tmp_path / 'layout'}:v1")
    store = open_store(ref)
    push(src, store, ref, MD)
    m = fetch_model_manifest(store, ref)
    weights = next(la for la in m.layers if la.filepath == "model.safetensors")
    blob = tmp_path / "layout" / "blobs" / "sha256" / weights.digest.split(":")[1]
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[1000] ^= 0xFF
    blob.write_bytes(bytes(data))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("untouched")
    with pytest.raises(DigestMismatchError):
        pull(store, ref, out, overwrite=True)
    assert tree(out) == {"keep.txt": b"untouched"}
    assert not any(p.name.startswith(".out.modelseal-pull") for p in tmp_path.iterdir())


def test_pull_refuses_blob_altered_in_registry_storage(registry: RegistryServer,
                                                        tmp_path: Path) -> None:
    src = make_model(tmp_path / "src")
    ref = parse_ref(f"{registry.host}/models/tiny:v1")
    store = open_store(ref)
    push(src, store, ref, MD)
    m = fetch_model_manifest(store, ref)
    weights = next(la for la in m.layers if la.filepath == "model.safetensors")
    path = blob_path(registry.storage_dir, weights.digest)
    data = bytearray(path.read_bytes())
    data[5] ^= 0x01
    path.write_bytes(bytes(data))
    out = tmp_path / "out"
    with pytest.raises(DigestMismatchError) as e:
        pull(store, ref, out)
    assert weights.digest in str(e.value)
    assert not out.exists()


def test_round_trip_of_a_large_file(registry: RegistryServer, tmp_path: Path) -> None:
    src = tmp_path / "big"
    src.mkdir()
    with open(src / "weights.bin", "wb") as f:
        for _ in range(105):
            f.write(os.urandom(1 << 20))
    ref = parse_ref(f"{registry.host}/models/big:v1")
    store = open_store(ref)
    push(src, store, ref, MD)
    out = tmp_path / "out"
    pull(store, ref, out)
    assert (out / "weights.bin").stat().st_size == 105 << 20
    cmp = subprocess.run(["cmp", str(src / "weights.bin"), str(out / "weights.bin")])
    assert cmp.returncode == 0


class StopRegistryMidway(Progress):
    """Stops the registry once some bytes of the upload have gone through."""

    def __init__(self, registry: RegistryServer, after: int) -> None:
        self.registry, self.after, self.sent, self.stopped = registry, after, 0, False

    def start(self, label: str, total: int) -> Callable[[int], None]:
        def advance(n: int) -> None:
            if label != "uploading":
                return
            self.sent += n
            if self.sent >= self.after and not self.stopped:
                self.stopped = True
                self.registry.stop()
        return advance


def test_registry_stopped_mid_push_leaves_no_tag(registry: RegistryServer,
                                                  tmp_path: Path) -> None:
    src = tmp_path / "m"
    src.mkdir()
    for i in range(3):
        (src / f"w{i}.bin").write_bytes(os.urandom(8 << 20))
    ref = parse_ref(f"{registry.host}/models/crash:v1")
    store = open_store(ref, retries=2)
    with pytest.raises(StoreError) as e:
        push(src, store, ref, MD, progress=StopRegistryMidway(registry, 4 << 20), workers=1)
    assert registry.host in str(e.value)
    registry.start()
    store = open_store(ref)
    assert store.resolve("v1") is None
    result = push(src, store, ref, MD)
    out = tmp_path / "out"
    pull(store, ref, out)
    assert tree(out) == tree(src)
    assert store.resolve("v1") == result.digest


def test_cli_push_inspect_pull_json(tmp_path: Path) -> None:
    src = make_model(tmp_path / "src")
    ref = f"oci:{tmp_path / 'layout'}:v1"
    env = {**os.environ, "MODELSEAL_CACHE_DIR": str(tmp_path / "cache")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "modelseal.cli", *args],
                              capture_output=True, text=True, env=env)

    p = cli("push", str(src), ref, "--name", "tiny", "--version", "1", "--json")
    assert p.returncode == 0, p.stderr
    pushed = json.loads(p.stdout)
    p = cli("inspect", ref, "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["digest"] == pushed["digest"]
    p = cli("pull", f"oci:{tmp_path / 'layout'}@{pushed['digest']}", str(tmp_path / "o"),
            "--json")
    assert p.returncode == 0, p.stderr
    assert tree(tmp_path / "o") == tree(src)
    (src / "README.md").write_text("changed")
    p = cli("push", str(src), ref, "--name", "tiny", "--version", "1")
    assert p.returncode == 5
    assert "already points at" in p.stderr and pushed["digest"] in p.stderr
    p = cli("pull", "nohost/x", str(tmp_path / "z"))
    assert p.returncode == 2 and "oci:PATH" in p.stderr


def test_shipped_config_schema_is_the_modelpack_one() -> None:
    from importlib import resources

    from paths import MODELPACK_SCHEMA

    shipped = resources.files("modelseal").joinpath("data/modelpack-config-schema.json")
    assert json.loads(shipped.read_text()) == json.loads(MODELPACK_SCHEMA.read_text())


def test_pulled_directory_gets_the_usual_mode(tmp_path: Path) -> None:
    src = make_model(tmp_path / "src")
    ref = parse_ref(f"oci:{tmp_path / 'layout'}:v1")
    store = open_store(ref)
    push(src, store, ref, MD)
    old = os.umask(0o022)
    try:
        pull(store, ref, tmp_path / "out")
    finally:
        os.umask(old)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755


def all_entries(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes())
            for p in sorted(root.rglob("*"))}


def test_pull_overwrite_leaves_exactly_the_models_tree(tmp_path: Path) -> None:
    """A verified directory must not hold files the model does not have (issue 8)."""
    src = make_model(tmp_path / "src")
    ref = parse_ref(f"oci:{tmp_path / 'layout'}:v1")
    store = open_store(ref)
    push(src, store, ref, MD)
    out = tmp_path / "out"
    (out / "stale" / "deep").mkdir(parents=True)
    (out / "stale" / "deep" / "old.bin").write_bytes(b"unverified")
    (out / "README.md").write_text("old readme")
    out.chmod(0o750)
    pull(store, ref, out, overwrite=True)
    assert all_entries(out) == all_entries(src)
    assert out.stat().st_mode & 0o777 == 0o750  # the deployer's directory mode is kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layout", "out", "src"]


def test_pull_refuses_a_non_empty_target_without_overwrite(tmp_path: Path) -> None:
    src = make_model(tmp_path / "src")
    ref = parse_ref(f"oci:{tmp_path / 'layout'}:v1")
    store = open_store(ref)
    push(src, store, ref, MD)
    out = tmp_path / "out"
    out.mkdir()
    (out / "other.txt").write_text("someone else's")
    with pytest.raises(InputError, match="not empty"):
        pull(store, ref, out)
    assert all_entries(out) == {"other.txt": b"someone else's"}
    empty = tmp_path / "empty"
    empty.mkdir()
    pull(store, ref, empty)  # an empty directory is fine
    assert all_entries(empty) == all_entries(src)


def test_pull_refuses_a_symlinked_target(tmp_path: Path) -> None:
    src = make_model(tmp_path / "src")
    ref = parse_ref(f"oci:{tmp_path / 'layout'}:v1")
    store = open_store(ref)
    push(src, store, ref, MD)
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "link")
    with pytest.raises(InputError, match="not a directory"):
        pull(store, ref, tmp_path / "link", overwrite=True)
    assert list(real.iterdir()) == []


def test_layout_push_removes_temporaries_of_dead_writers_only(tmp_path: Path) -> None:
    src = make_model(tmp_path / "src")
    ref = parse_ref(f"oci:{tmp_path / 'layout'}:v1")
    push(src, open_store(ref), ref, MD)
    blobs = tmp_path / "layout" / "blobs" / "sha256"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (blobs / f".tmp-{dead.pid}-abcdefgh").write_bytes(b"half a blob")
    (tmp_path / "layout" / f".tmp-{dead.pid}-defghijk").write_bytes(b"half an index")
    (blobs / f".tmp-{os.getpid()}-livelive").write_bytes(b"a blob being written")
    (src / "README.md").write_text("v2")
    ref2 = parse_ref(f"oci:{tmp_path / 'layout'}:v2")
    push(src, open_store(ref2), ref2, MD)
    left = sorted(p.name for p in [*blobs.iterdir(), *(tmp_path / "layout").iterdir()]
                  if p.name.startswith(".tmp-"))
    assert left == [f".tmp-{os.getpid()}-livelive"]


def test_layout_index_cache_sees_other_writers(tmp_path: Path) -> None:
    src = make_model(tmp_path / "src")
    ref = parse_ref(f"oci:{tmp_path / 'layout'}:v1")
    reader, writer = open_store(ref), open_store(ref)
    first = push(src, writer, ref, MD).digest
    assert reader.resolve("v1") == first
    (src / "README.md").write_text("v2")
    ref2 = parse_ref(f"oci:{tmp_path / 'layout'}:v2")
    second = push(src, writer, ref2, MD).digest
    assert reader.resolve("v2") == second and reader.list_tags() == ["v1", "v2"]
