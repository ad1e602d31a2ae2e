"""Models with very many files: packed into tar layers with a signed file list (docs/format.md,
"Very many files"), pushed to a real registry, pulled back identical, verified without
weights, and unpacked safely whatever a hostile tar holds."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelseal import modelpack
from modelseal._util.json import canonical_json
from modelseal.digest import hash_files
from modelseal.errors import DigestMismatchError, InputError, UnsafePathError
from modelseal.formats import ARTIFACT_TYPE, FILE_LIST_MEDIA_TYPE, MANIFEST_V1, TAR_MEDIA_TYPES
from modelseal.modelpack import ModelMetadata, parse_model_manifest, with_file_list
from modelseal.oci import open_store
from modelseal.oci.store import Descriptor, Store
from modelseal.refs import parse_ref
from modelseal.tarlayers import MANIFEST_SAFE_BYTES, Member, file_list_doc, tar_info, unpack_tar
from modelseal.transfer import fetch_model_manifest, pull, push
from modelseal.verify.pipeline import verify_model
from modelseal.verify.policy import load_policy
from pipeline_fixtures import FUNCTIONARY, STEPS, honest_pipeline, publish, record_pipeline
from registry_server import RegistryServer

MANY = 25_000
PACKED_PIPELINE = 10_500
MD = ModelMetadata({"name": "many", "version": "1.0"})


def write_many(root: Path, n: int, *, per_dir: int = 500) -> None:
    """``n`` tiny files in directories of ``per_dir``: a tokenizer shard set, a dataset."""
    for i in range(n):
        d = root / "shards" / f"{i // per_dir:04d}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"part-{i:06d}.json").write_text(f'{{"id": {i}}}')


def tree(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file below ``root``."""
    paths = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): d.sha256 for p, d in zip(paths, hash_files(paths),
                                                                  strict=True)}


class FetchLog:
    """Records every blob digest a store is asked for."""

    def __init__(self, store: Store) -> None:
        self.digests: list[str] = []
        real_fetch, real_get = store.fetch_blob, store.get_blob_bytes

        def fetch_blob(digest: str, *a: Any, **k: Any) -> None:
            self.digests.append(digest)
            return real_fetch(digest, *a, **k)

        def get_blob_bytes(digest: str, *a: Any, **k: Any) -> bytes:
            self.digests.append(digest)
            return real_get(digest, *a, **k)

        store.fetch_blob = fetch_blob  # type: ignore[method-assign]
        store.get_blob_bytes = get_blob_bytes  # type: ignore[method-assign]


def test_many_files_push_pull_on_registry(tmp_path: Path, registry: RegistryServer) -> None:
    """25,000 files: a 6 MiB manifest one layer per file, which the registry would refuse."""
    model = tmp_path / "model"
    write_many(model, MANY)
    (model / "config.json").write_text('{"hidden": 8}')
    ref = parse_ref(f"{registry.host}/models/many:v1")
    store = open_store(ref)
    push(model, store, ref, MD)

    raw_manifest, _, _ = store.get_manifest("v1")
    assert len(raw_manifest) < MANIFEST_SAFE_BYTES
    types = [la["mediaType"] for la in json.loads(raw_manifest)["layers"]]
    assert types.count(FILE_LIST_MEDIA_TYPE) == 1
    assert len(types) < 20  # 25,001 files in a handful of blobs

    # what a verifier compares with: every file, with its own digest, and no tar downloaded
    log = FetchLog(store)
    manifest = fetch_model_manifest(store, ref)
    expected = {p: "sha256:" + d for p, d in tree(model).items()}
    assert manifest.files == expected
    tars = {d.digest for d, _ in manifest.tar_layers}
    assert tars and not tars & set(log.digests)

    out = tmp_path / "pulled"
    res = pull(store, ref, out)
    assert res.files == MANY + 1
    assert tree(out) == tree(model)

    # model_signing: the manifest's files (packed ones included) sign the pulled directory
    if _has_model_signing():
        from modelseal.attest.model_signing import sign_model_signing
        from modelseal.attest.signers import keygen, load_signer

        key, pub = keygen(tmp_path / "ms-key")
        sig = tmp_path / "model.sig"
        sig.write_bytes(sign_model_signing(sorted(manifest.files.items()),
                                           load_signer(str(key)), model_name="pulled"))
        r = subprocess.run([sys.executable, "-m", "model_signing", "verify", "key",
                            "--signature", str(sig), "--public_key", str(pub), str(out)],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr


def test_packed_model_verifies_with_policy_without_tars(tmp_path: Path,
                                                        registry: RegistryServer) -> None:
    """The honest pipeline over a packed model (past the 10,000-file threshold): its links
    list every file, and the verifier decides from the file list, fetching no tar. (Links of
    more files than this pass the verifier's 4 MiB bound per attestation: docs/format.md.)"""
    p = honest_pipeline(tmp_path, registry.host, push_model=False)
    write_many(p.model_dir, PACKED_PIPELINE)
    fs = p.functionaries
    bundles = record_pipeline(p.workspace, {s: fs[FUNCTIONARY[s]].signer for s in STEPS})
    p.digest = publish(p.store, p.ref, p.model_dir, list(bundles.values()))
    manifest = fetch_model_manifest(p.store, p.ref)
    assert manifest.tar_layers and len(manifest.files) == PACKED_PIPELINE + 2

    log = FetchLog(p.store)
    result = verify_model(p.store, p.ref, load_policy(p.policy_path))
    assert result.verified, [r.message for r in result.refusals]
    assert not {d.digest for d, _ in manifest.tar_layers} & set(log.digests)


def _has_model_signing() -> bool:
    try:
        import model_signing  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture
def small_pack(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pack from 8 files on, so packing is tested on small models."""
    monkeypatch.setattr(modelpack, "PACK_FILES_THRESHOLD", 8)


def test_verify_refuses_packed_file_other_than_signed(tmp_path: Path, registry: RegistryServer,
                                                      small_pack: None) -> None:
    p = honest_pipeline(tmp_path, registry.host, push_model=False)
    write_many(p.model_dir, 40, per_dir=10)
    fs = p.functionaries
    bundles = record_pipeline(p.workspace, {s: fs[FUNCTIONARY[s]].signer for s in STEPS})
    p.digest = publish(p.store, p.ref, p.model_dir, list(bundles.values()))
    assert verify_model(p.store, p.ref, load_policy(p.policy_path)).verified
    # the same signed evidence, attached to a model whose tar carries one changed file
    (p.model_dir / "shards" / "0002" / "part-000021.json").write_text('{"id": "evil"}')
    evil = p.ref.with_tag("evil")
    publish(p.store, evil, p.model_dir, list(bundles.values()))
    r = verify_model(p.store, evil, load_policy(p.policy_path))
    assert not r.verified
    assert any("shards/0002/part-000021.json" in (x.artifact or "") + x.message
               for x in r.refusals)


def test_small_models_keep_one_raw_layer_per_file(tmp_path: Path) -> None:
    model = tmp_path / "m"
    write_many(model, 30, per_dir=10)
    ref = parse_ref(f"oci:{tmp_path / 'layout'}:v1")
    store = open_store(ref)
    push(model, store, ref, MD)
    doc = json.loads(store.get_manifest("v1")[0])
    assert len(doc["layers"]) == 30
    assert all(la["mediaType"].endswith(".raw") for la in doc["layers"])


def test_packing_is_deterministic(tmp_path: Path, small_pack: None,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    model = tmp_path / "m"
    write_many(model, 50, per_dir=7)
    digests = []
    for n in (1, 2):
        ref = parse_ref(f"oci:{tmp_path / f'layout{n}'}:v1")
        os.utime(model / "shards" / "0001" / "part-000007.json", (n * 1000, n * 1000))
        digests.append(push(model, open_store(ref), ref, MD).digest)
    assert digests[0] == digests[1]


def test_push_refuses_too_large_manifest_before_uploading(
        tmp_path: Path, registry: RegistryServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modelpack, "MANIFEST_LIMIT_BYTES", 2_000)
    model = tmp_path / "m"
    write_many(model, 30, per_dir=10)
    ref = parse_ref(f"{registry.host}/models/big:v1")
    with pytest.raises(InputError) as e:
        push(model, open_store(ref), ref, MD)
    assert e.value.exit_code == 2
    blobs = registry.storage_dir / "docker" / "registry" / "v2" / "blobs"
    assert not blobs.exists() or not any(p.is_file() for p in blobs.rglob("*"))


# -- hostile packed artifacts ---------------------------------------------------------------

GOOD = b'{"ok": true}'
GOOD_MEMBER = Member("ok.json", "sha256:" + hashlib.sha256(GOOD).hexdigest(), len(GOOD))


def _tar(build: Callable[[tarfile.TarFile], None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        build(tf)
    return buf.getvalue()


def _add(tf: tarfile.TarFile, name: str, data: bytes, size: int | None = None) -> None:
    ti = tar_info(name, len(data) if size is None else size)
    tf.addfile(ti, io.BytesIO(data))


def _special(name: str, kind: bytes, link: str = "") -> Callable[[tarfile.TarFile], None]:
    def build(tf: tarfile.TarFile) -> None:
        _add(tf, "ok.json", GOOD)
        ti = tar_info(name, 0)
        ti.type, ti.linkname = kind, link
        tf.addfile(ti)
    return build


HOSTILE: dict[str, tuple[Callable[[tarfile.TarFile], None], list[Member], type[Exception]]] = {
    "dotdot": (lambda tf: _add(tf, "../escaped.json", GOOD),
               [Member("../escaped.json", GOOD_MEMBER.digest, len(GOOD))], UnsafePathError),
    "absolute": (lambda tf: _add(tf, "/tmp/escaped.json", GOOD), [GOOD_MEMBER], UnsafePathError),
    "symlink": (_special("link", tarfile.SYMTYPE, "/etc/passwd"), [GOOD_MEMBER],
                UnsafePathError),
    "hardlink": (_special("hard", tarfile.LNKTYPE, "/etc/passwd"), [GOOD_MEMBER],
                 UnsafePathError),
    "device": (_special("dev", tarfile.CHRTYPE), [GOOD_MEMBER], UnsafePathError),
    "fifo": (_special("fifo", tarfile.FIFOTYPE), [GOOD_MEMBER], UnsafePathError),
    "duplicate": (lambda tf: (_add(tf, "ok.json", GOOD), _add(tf, "ok.json", GOOD)),
                  [GOOD_MEMBER], UnsafePathError),
    "unlisted": (lambda tf: (_add(tf, "ok.json", GOOD), _add(tf, "extra.json", GOOD)),
                 [GOOD_MEMBER], UnsafePathError),
    "size-mismatch": (lambda tf: _add(tf, "ok.json", GOOD + b" "),
                      [GOOD_MEMBER], DigestMismatchError),
    "content-mismatch": (lambda tf: _add(tf, "ok.json", b'{"ok": fals}'),
                         [GOOD_MEMBER], DigestMismatchError),
    "missing": (lambda tf: None, [GOOD_MEMBER], DigestMismatchError),
    "stray-directory": (lambda tf: (_add(tf, "ok.json", GOOD), tf.addfile(_dir("elsewhere"))),
                        [GOOD_MEMBER], UnsafePathError),
}


def _dir(name: str) -> tarfile.TarInfo:
    ti = tar_info(name, 0)
    ti.type, ti.mode = tarfile.DIRTYPE, 0o755
    return ti


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_unpack_refuses_hostile_tar(tmp_path: Path, case: str) -> None:
    build, members, error = HOSTILE[case]
    tar = tmp_path / "layer.tar"
    tar.write_bytes(_tar(build))
    dest = tmp_path / "a" / "b" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(error):
        unpack_tar(tar, members, dest, what="tar layer")
    assert not (tmp_path / "a" / "b" / "escaped.json").exists()
    assert not (tmp_path / "a" / "escaped.json").exists()
    assert not any(p.is_symlink() for p in dest.rglob("*"))


def test_unpack_refuses_gzip_tar(tmp_path: Path) -> None:
    import gzip

    tar = tmp_path / "layer.tar"
    tar.write_bytes(gzip.compress(_tar(lambda tf: _add(tf, "ok.json", GOOD))))
    with pytest.raises(InputError):
        unpack_tar(tar, [GOOD_MEMBER], tmp_path, what="tar layer")


def _packed(store: Store, tag: str, tar: bytes, members: list[Member],
            extra_layers: list[dict[str, Any]] | None = None) -> None:
    """Push a hand-made packed artifact: one tar layer, its file list, nothing else."""
    tar_digest = store.put_blob_bytes(tar)
    listing = canonical_json(file_list_doc([(tar_digest, members)]))
    list_digest = store.put_blob_bytes(listing)
    config = canonical_json({"descriptor": {"name": "x"}, "config": {},
                             "modelfs": {"type": "layers", "diffIds": []}})
    cfg = store.put_blob_bytes(config)
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST_V1, "artifactType": ARTIFACT_TYPE,
                "config": {"mediaType": modelpack.CONFIG_MEDIA_TYPE, "digest": cfg,
                           "size": len(config)},
                "layers": [{"mediaType": TAR_MEDIA_TYPES["weight"], "digest": tar_digest,
                            "size": len(tar)},
                           {"mediaType": FILE_LIST_MEDIA_TYPE, "digest": list_digest,
                            "size": len(listing)}, *(extra_layers or [])]}
    store.put_manifest(canonical_json(manifest), MANIFEST_V1, tag)


@pytest.mark.parametrize("case", ["dotdot", "symlink", "content-mismatch"])
def test_pull_of_hostile_packed_model_leaves_nothing(tmp_path: Path, registry: RegistryServer,
                                                    case: str) -> None:
    build, members, error = HOSTILE[case]
    ref = parse_ref(f"{registry.host}/models/hostile:{case}")
    store = open_store(ref)
    _packed(store, case, _tar(build), members)
    (tmp_path / "deploy").mkdir()
    target = tmp_path / "deploy" / "model"
    with pytest.raises(error):
        pull(store, ref, target)
    assert not target.exists()
    assert sorted(os.listdir(tmp_path / "deploy")) == []  # no staging or tar left behind
    assert not (tmp_path / "deploy" / "escaped.json").exists()


def _manifest(layers: list[dict[str, Any]]) -> bytes:
    return canonical_json({"schemaVersion": 2, "mediaType": MANIFEST_V1,
                           "artifactType": ARTIFACT_TYPE,
                           "config": {"mediaType": modelpack.CONFIG_MEDIA_TYPE,
                                      "digest": "sha256:" + "1" * 64, "size": 2},
                           "layers": layers})


TAR = {"mediaType": TAR_MEDIA_TYPES["weight"], "digest": "sha256:" + "a" * 64, "size": 10240}
LIST = {"mediaType": FILE_LIST_MEDIA_TYPE, "digest": "sha256:" + "b" * 64, "size": 100}
RAW = {"mediaType": modelpack.MEDIA_TYPES["weight"], "digest": GOOD_MEMBER.digest, "size": 12,
       "annotations": {"org.cncf.model.filepath": "ok.json"}}


def test_tar_layers_without_file_list_are_refused() -> None:
    with pytest.raises(InputError):
        parse_model_manifest(_manifest([TAR]), "sha256:" + "2" * 64)


def test_compressed_tar_layer_is_refused() -> None:
    gz = dict(TAR, mediaType=TAR_MEDIA_TYPES["weight"] + "+gzip")
    with pytest.raises(InputError):
        parse_model_manifest(_manifest([gz, LIST]), "sha256:" + "2" * 64)


def test_two_file_lists_are_refused() -> None:
    other = dict(LIST, digest="sha256:" + "c" * 64)
    with pytest.raises(InputError):
        parse_model_manifest(_manifest([TAR, LIST, other]), "sha256:" + "2" * 64)


def _listing(entries: list[tuple[str, list[Member]]]) -> bytes:
    return canonical_json(file_list_doc(entries))


@pytest.mark.parametrize("case", ["unknown-tar", "tar-not-listed", "dotdot", "absolute",
                                  "raw-clash", "file-and-dir", "too-big", "duplicate"])
def test_hostile_file_list_is_refused(case: str) -> None:
    tar = TAR["digest"]
    m = parse_model_manifest(_manifest([RAW, TAR, LIST]), "sha256:" + "2" * 64)
    assert not m.complete
    with pytest.raises(InputError):
        _ = m.files
    entries: dict[str, list[tuple[str, list[Member]]]] = {
        "unknown-tar": [(tar, [Member("x", GOOD_MEMBER.digest, 1)]),
                        ("sha256:" + "f" * 64, [Member("y", GOOD_MEMBER.digest, 1)])],
        "tar-not-listed": [],
        "dotdot": [(tar, [Member("a/../../x", GOOD_MEMBER.digest, 1)])],
        "absolute": [(tar, [Member("/etc/x", GOOD_MEMBER.digest, 1)])],
        "raw-clash": [(tar, [Member("ok.json", GOOD_MEMBER.digest, 1)])],
        "file-and-dir": [(tar, [Member("ok.json/inner", GOOD_MEMBER.digest, 1)])],
        "too-big": [(tar, [Member("x", GOOD_MEMBER.digest, 20000)])],
        "duplicate": [(tar, [Member("x", GOOD_MEMBER.digest, 1),
                             Member("x", GOOD_MEMBER.digest, 1)])],
    }
    with pytest.raises(InputError):
        with_file_list(m, _listing(entries[case]))


def test_file_list_completes_the_manifest() -> None:
    m = parse_model_manifest(_manifest([RAW, TAR, LIST]), "sha256:" + "2" * 64)
    full = with_file_list(m, _listing([(TAR["digest"], [Member("sub/x.json",
                                                               GOOD_MEMBER.digest, 12)])]))
    assert full.files == {"ok.json": GOOD_MEMBER.digest, "sub/x.json": GOOD_MEMBER.digest}
    assert [d.digest for d, _ in full.tar_layers] == [TAR["digest"]]
    assert full.layers[-1].packed_in == TAR["digest"]
    assert Descriptor.from_dict(LIST).digest == full.file_list.digest  # type: ignore[union-attr]


def test_sigkill_while_unpacking_leaves_nothing_and_rerun_completes(
        tmp_path: Path, small_pack: None) -> None:
    import signal

    model = tmp_path / "m"
    write_many(model, 60, per_dir=10)
    ref_text = f"oci:{tmp_path / 'layout'}:v1"
    ref = parse_ref(ref_text)
    push(model, open_store(ref), ref, MD)
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    cmd = [sys.executable, "-m", "modelseal.cli", "pull", ref_text, str(deploy / "model")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "MODELSEAL_TEST_KILL_AT": "file:20"})
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert not (deploy / "model").exists()
    assert os.listdir(deploy)  # the staging tree and the tar download, named for the sweep
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert os.listdir(deploy) == ["model"]
    assert tree(deploy / "model") == tree(model)
