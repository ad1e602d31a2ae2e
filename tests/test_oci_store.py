"""The store layer's guarantees, each in one place: every byte a backend hands out is checked
by the one base (``oci.store.BlobStore``), the one streaming check (``BlobStream``) never hands
out the last piece of content that is not the blob, one retry policy, one reference grammar,
and the oci package below modelpack (no import back)."""

from __future__ import annotations

import ast
import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelseal._util.json import canonical_json
from modelseal.errors import DigestMismatchError, NotFoundError
from modelseal.formats import EMPTY_DIGEST, EMPTY_JSON, EMPTY_V1, MANIFEST_V1
from modelseal.oci import store as store_module
from modelseal.oci._transport import RetryPolicy
from modelseal.oci.archive import ArchiveStore
from modelseal.oci.image_layout import LayoutStore
from modelseal.oci.registry import RegistryStore
from modelseal.oci.store import BlobStore, BlobStream, Chunk
from modelseal.refs import is_reference, parse_ref
from registry_server import RegistryServer, blob_path

SRC = Path(__file__).resolve().parent.parent / "src" / "modelseal"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _manifest(layer: bytes) -> bytes:
    return canonical_json({
        "schemaVersion": 2, "mediaType": MANIFEST_V1,
        "config": {"mediaType": EMPTY_V1, "digest": EMPTY_DIGEST, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": _digest(layer),
                    "size": len(layer)}]})


def _swap(path: Path) -> None:
    """Replace a stored blob's bytes by others of the same length (a swapped blob)."""
    data = path.read_bytes()
    os.chmod(path, 0o644)
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))


def _layout_with_swapped_blob(tmp_path: Path, blob: bytes) -> LayoutStore:
    store = LayoutStore(tmp_path / "layout")
    store.put_blob_bytes(blob)
    _swap(store.root / "blobs" / "sha256" / _digest(blob)[7:])
    return store


def _archive_with_swapped_blob(tmp_path: Path, blob: bytes) -> ArchiveStore:
    layout = LayoutStore(tmp_path / "layout")
    layout.put_blob_bytes(blob)
    _swap(layout.root / "blobs" / "sha256" / _digest(blob)[7:])
    archive = ArchiveStore(tmp_path / "a.tar", writable=True)
    archive._writer = layout  # the swapped layout, tarred as it is
    archive.commit()
    return ArchiveStore(tmp_path / "a.tar")


@pytest.mark.parametrize("backend", ["layout", "archive", "registry"])
def test_every_backend_refuses_a_swapped_blob_through_the_one_base(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    blob = os.urandom(3 * 1024 * 1024 + 5)
    digest = _digest(blob)
    store: BlobStore
    if backend == "layout":
        store = _layout_with_swapped_blob(tmp_path, blob)
    elif backend == "archive":
        store = _archive_with_swapped_blob(tmp_path, blob)
    else:
        registry: RegistryServer = request.getfixturevalue("registry")
        store = RegistryStore(registry.host, "models/swapped")
        store.put_blob_bytes(blob)
        _swap(blob_path(registry.storage_dir, digest))
    assert isinstance(store, BlobStore)
    out = io.BytesIO()
    with pytest.raises(DigestMismatchError):
        store.fetch_blob(digest, len(blob), out)
    assert len(out.getvalue()) < len(blob)  # the last piece was never handed out
    with pytest.raises(DigestMismatchError):
        store.get_blob_bytes(digest)
    with pytest.raises(DigestMismatchError):
        b"".join(bytes(p) for p in store.open_blob(digest, len(blob)))


class _Hostile(BlobStore):
    """A backend that serves other bytes than asked for: only the base stands between it and
    the caller."""

    def __init__(self, served: dict[str, bytes], tags: dict[str, str]) -> None:
        self.served, self.tags = served, tags

    def describe(self) -> str:
        return "hostile"

    def resolve(self, reference: str) -> str | None:
        return self.tags.get(reference, reference)

    def _read_blob(self, digest: str, size: int | None) -> Iterator[Chunk]:
        if digest not in self.served:
            raise NotFoundError(f"no {digest}")
        data = self.served[digest]
        for i in range(0, len(data), 7):
            yield data[i:i + 7]

    def _read_manifest(self, reference: str) -> tuple[bytes, str, str | None]:
        digest = self.tags.get(reference, reference)
        return self._read_small_blob(digest, 1 << 20), MANIFEST_V1, digest


def test_the_base_refuses_a_backend_that_serves_other_bytes() -> None:
    good, evil = _manifest(b"weights"), _manifest(b"poisoned weights")
    store = _Hostile({_digest(good): evil, _digest(b"w"): b"x"}, {"v1": _digest(good)})
    for ref in (_digest(good), "v1"):
        with pytest.raises(DigestMismatchError):
            store.get_manifest(ref)
    with pytest.raises(DigestMismatchError):
        store.get_blob_bytes(_digest(b"w"))
    with pytest.raises(DigestMismatchError):
        store.fetch_blob(_digest(b"w"), None, io.BytesIO())
    honest = _Hostile({_digest(good): good}, {})
    assert honest.get_manifest(_digest(good))[2] == _digest(good)


@pytest.fixture(params=["inline", "thread"])
def hashing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways a stream is hashed: in the reader's thread, and (large blobs of immutable
    pieces) on a thread of its own: the checks must not differ."""
    if request.param == "thread":
        monkeypatch.setattr(store_module, "PARALLEL_HASH_MIN", 1)
    return str(request.param)


def test_blob_stream_withholds_the_last_piece_of_content_that_is_not_the_blob(
        hashing: str) -> None:
    data = os.urandom(100)
    wrong = data[:-1] + bytes([data[-1] ^ 1])
    got: list[bytes] = []
    with pytest.raises(DigestMismatchError):
        for piece in BlobStream([wrong[:40], wrong[40:80], wrong[80:]], _digest(data), 100,
                                "blob"):
            got.append(bytes(piece))
    assert b"".join(got) == wrong[:80]
    got.clear()
    with pytest.raises(DigestMismatchError):  # without a size: read one piece ahead
        for piece in BlobStream([wrong[:50], wrong[50:]], _digest(data), None, "blob"):
            got.append(bytes(piece))
    assert b"".join(got) == wrong[:50]
    assert b"".join(BlobStream([data[:3], data[3:]], _digest(data), 100, "blob")) == data
    # a source that reuses its buffer (a file read into one bytearray) is hashed as read
    buf = bytearray(50)

    def reused() -> Iterator[memoryview]:
        for i in (0, 50):
            buf[:] = data[i:i + 50]
            yield memoryview(buf)

    assert b"".join(bytes(p) for p in BlobStream(reused(), _digest(data), 100, "b")) == data


@pytest.mark.parametrize("pieces", [[b"ab", b"c"], [b"abc", b"more"], [b"abc", b"", b"x"]])
def test_blob_stream_refuses_content_of_another_size(pieces: list[bytes], hashing: str) -> None:
    with pytest.raises(DigestMismatchError):
        b"".join(BlobStream(pieces, _digest(b"abc" if len(b"".join(pieces)) != 3 else b"abd"),
                            3, "blob"))
    with pytest.raises(DigestMismatchError):  # the right bytes but more of them
        b"".join(BlobStream([b"abc", b"d"], _digest(b"abc"), 3, "blob"))


def test_a_stream_left_half_read_stops_its_hashing_thread(hashing: str) -> None:
    """A consumer that stops early (an interrupt, a full disk) leaves no thread behind."""
    import threading

    data = os.urandom(64)
    stream = BlobStream([data[i:i + 8] for i in range(0, 64, 8)], _digest(data), 64, "blob")
    it = iter(stream)
    next(it)
    next(it)
    hashers = [t for t in threading.enumerate() if t.name == "modelseal-hash"]
    assert len(hashers) == (hashing == "thread")
    stream.close()
    assert not [t for t in threading.enumerate() if t.name == "modelseal-hash"]


def test_a_checked_stream_is_hashed_once_when_uploaded(registry: RegistryServer,
                                                       tmp_path: Path) -> None:
    """``put_blob_stream`` given a source's ``open_blob`` stream does not wrap it again, and
    a swapped source blob never reaches the registry whole."""
    blob = os.urandom(1024 * 1024 + 3)
    src = LayoutStore(tmp_path / "src")
    src.put_blob_bytes(blob)
    dst = RegistryStore(registry.host, "models/streamed")
    stream = src.open_blob(_digest(blob), len(blob), read_ahead=2)
    assert dst.put_blob_stream(stream, _digest(blob), len(blob)) is True
    assert stream.finished and dst.get_blob_bytes(_digest(blob)) == blob
    other = os.urandom(4096)
    bad = _layout_with_swapped_blob(tmp_path / "bad", other)
    with pytest.raises(DigestMismatchError):
        dst.put_blob_stream(bad.open_blob(_digest(other), len(other)), _digest(other),
                            len(other))
    assert not dst.has_blob(_digest(other))


def test_one_retry_policy_backs_off_doubling_within_its_cap() -> None:
    policy = RetryPolicy(attempts=5, backoff=0.25, cap=1.0)
    for retry, base in enumerate([0.25, 0.5, 1.0, 1.0, 1.0]):
        assert all(base <= policy.delay(retry) <= base * 1.5 for _ in range(50))
    assert RetryPolicy(backoff=0.0).delay(3) == 0.0


@pytest.mark.parametrize(("text", "is_ref"), [
    ("oci:models", True), ("oci-archive:b.tar:v1", True), ("localhost/m", True),
    ("127.0.0.1:5000/team/m:v1", True), ("registry.example/m@sha256:" + "a" * 64, True),
    ("layout.json", False), ("./dir.d/layout.json", False), ("/abs/x.y/l", False),
    ("layouts/root.layout", False), ("~/x.y/l", False),
])
def test_a_reference_is_told_from_a_path_by_the_one_grammar(text: str, is_ref: bool) -> None:
    assert is_reference(text) is is_ref
    if is_ref:
        parse_ref(text)  # what is_reference calls a reference, parse_ref reads


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


def test_the_oci_package_imports_nothing_above_it() -> None:
    """Dependencies point one way: modelpack, transfer, copy, verify, cli -> oci ->
    (digest, refs, formats, _util) -> errors; not even a lazy import goes back up."""
    above = ("modelseal.modelpack", "modelseal.transfer", "modelseal.copy", "modelseal.cli",
             "modelseal.verify", "modelseal.attest", "modelseal.attest.attachments",
             "modelseal.tarlayers", "modelseal.bom", "modelseal.audit", "modelseal.lifecycle")
    for path in sorted((SRC / "oci").glob("*.py")):
        bad = {m for m in _imports(path) if m.startswith(above)}
        assert not bad, f"{path.name} imports {sorted(bad)}"
    for path in (SRC / "refs.py", SRC / "_util" / "network.py", SRC / "_util" / "time.py"):
        assert not {m for m in _imports(path) if m.startswith("modelseal.oci")}


def test_empty_blob_checked_like_any_other(tmp_path: Path) -> None:
    store = LayoutStore(tmp_path / "l")
    assert store.put_blob_bytes(EMPTY_JSON) == EMPTY_DIGEST
    assert store.get_blob_bytes(EMPTY_DIGEST) == EMPTY_JSON
    assert b"".join(BlobStream([], _digest(b""), 0, "empty")) == b""
    with pytest.raises(DigestMismatchError):
        b"".join(BlobStream([b"x"], _digest(b""), 0, "empty"))


def test_oras_py_client_runs_over_modelseal_transport(auth_registry: RegistryServer) -> None:
    """oras-py earns its place as the transport's base: its own client calls (here
    ``get_tags``) go through modelseal's TLS, Basic-auth answer and retry policy."""
    store = RegistryStore(auth_registry.host, "secure/oras", ca_file=str(auth_registry.ca_file),
                          username=auth_registry.username, password=auth_registry.password)
    store.put_blob_bytes(EMPTY_JSON)
    layer = store.put_blob_bytes(b"layer")
    assert layer == _digest(b"layer")
    store.put_manifest(_manifest(b"layer"), MANIFEST_V1, "v1")
    tags = store.transport.get_tags(f"{auth_registry.host}/secure/oras")
    assert "v1" in tags
