"""Large files are pulled with writing on a thread of its own (transfer._WriteBehind) and
hashing on another (oci.store._ThreadHasher), so receiving, hashing and the disk overlap, and
the writer hands its bytes to the disk as it goes: the digest check, the atomic switch and the
full-disk error must hold exactly as on the plain path."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import modelseal.transfer as transfer
from modelseal.errors import DigestMismatchError, DiskFullError
from modelseal.modelpack import ModelMetadata
from modelseal.oci import open_store
from modelseal.oci import store as store_module
from modelseal.refs import parse_ref
from modelseal.transfer import pull, push
from paths import small_tmpfs
from registry_server import RegistryServer, blob_path

MD = ModelMetadata({"name": "m", "version": "1"})


@pytest.fixture()
def write_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file takes the large-file path (not only those of 64 MiB and more): written
    behind, handed to the disk every MiB, hashed on a thread of its own."""
    monkeypatch.setattr(transfer, "WRITE_BEHIND_MIN", 0)
    monkeypatch.setattr(transfer, "WRITE_BEHIND_STEP", 1 << 20)
    monkeypatch.setattr(store_module, "PARALLEL_HASH_MIN", 1)


def _model(tmp_path: Path) -> tuple[Path, bytes]:
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(9 << 20)  # a few 4 MiB chunks: the queue fills and drains
    (src / "w.bin").write_bytes(data)
    (src / "config.json").write_text("{}")
    return src, data


def test_write_behind_pull_writes_every_byte_and_refuses_a_tampered_blob(
        registry: RegistryServer, tmp_path: Path, write_behind: None) -> None:
    src, data = _model(tmp_path)
    ref = parse_ref(f"{registry.host}/models/behind:v1")
    store = open_store(ref)
    result = push(src, store, ref, MD)
    pull(store, ref, tmp_path / "out")
    assert (tmp_path / "out" / "w.bin").read_bytes() == data
    assert (tmp_path / "out" / "config.json").read_text() == "{}"
    [layer] = [la for la in result.manifest.layers if la.filepath == "w.bin"]  # type: ignore[union-attr]
    stored = blob_path(registry.storage_dir, layer.digest)
    tampered = bytearray(stored.read_bytes())
    tampered[len(tampered) // 2] ^= 1
    stored.write_bytes(bytes(tampered))
    with pytest.raises(DigestMismatchError):
        pull(store, ref, tmp_path / "again")
    assert not (tmp_path / "again").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".modelseal")] == []


class _FullDisk:
    """A file whose second write finds the disk full."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, b: bytes) -> int:
        self.writes += 1
        if self.writes >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return len(b)


def test_write_behind_raises_the_writers_disk_full_error() -> None:
    out = _FullDisk()
    behind = transfer._WriteBehind(out)  # type: ignore[arg-type]
    with pytest.raises(OSError) as e:
        for _ in range(50):  # the error surfaces on a later write or on close
            behind.write(b"x" * 1024)
        behind.close()
    assert e.value.errno == errno.ENOSPC
    behind.close(check=False)  # closing again after the error does not hang


@pytest.fixture()
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 12 MiB tmpfs."""
    yield from small_tmpfs(tmp_path, "size=12m")


def test_disk_filling_up_during_a_write_behind_pull_is_a_disk_full_error(
        tmp_path: Path, tiny_fs: Path, write_behind: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    src, _ = _model(tmp_path)
    (tiny_fs / "taken").write_bytes(b"\0" * (6 << 20))  # another writer took half the space
    ref = parse_ref(f"oci:{tmp_path / 'layout'}:v1")
    push(src, open_store(ref), ref, MD)
    monkeypatch.setattr(transfer, "_space_check", lambda parent, manifest: None)
    with pytest.raises(DiskFullError) as e:
        pull(open_store(ref), ref, tiny_fs / "model")
    assert str(tiny_fs) in e.value.message
    assert sorted(p.name for p in tiny_fs.iterdir()) == ["taken"]
