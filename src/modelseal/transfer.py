"""Push a model directory as a ModelPack artifact; pull one back, safely.

Push uploads blobs first and the manifest last, so a tag never points at a partial artifact,
and never moves an existing tag to other content unless asked. Pull checks every path before
writing anything, streams each blob into a staging directory while hashing it, and moves files
into place only when everything matched: on failure the target is as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from modelseal.digest import DEFAULT_EXCLUDES, DigestCache, hash_files
from modelseal.errors import InputError, TagConflictError, UnsafePathError, UsageError
from modelseal.modelpack import (
    BuiltArtifact,
    Layer,
    ModelManifest,
    ModelMetadata,
    build_artifact,
    content_key,
    parse_model_manifest,
    scan_model_dir,
)
from modelseal.oci.store import MANIFEST_V1, Store
from modelseal.refs import Ref


class Progress:
    """Hooks the CLI uses to draw progress bars; the default does nothing."""

    def start(self, label: str, total: int) -> Callable[[int], None]:
        """Begin a phase of ``total`` bytes; returns the advance callback (thread-safe)."""
        return lambda n: None

    def finish(self) -> None:
        """End the current phase."""


@dataclass
class PushResult:
    ref: str
    digest: str
    tag: str | None
    files: int
    bytes_total: int
    uploaded_blobs: int = 0
    uploaded_bytes: int = 0
    unchanged: bool = False
    manifest: BuiltArtifact | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, object]:
        return {"ref": self.ref, "digest": self.digest, "tag": self.tag, "files": self.files,
                "bytes": self.bytes_total, "uploadedBlobs": self.uploaded_blobs,
                "uploadedBytes": self.uploaded_bytes, "unchanged": self.unchanged}


def package(model_dir: str | os.PathLike[str], metadata: ModelMetadata, *,
            role_overrides: Sequence[tuple[str, str]] = (), follow_symlinks: bool = False,
            cache: DigestCache | None = None, progress: Progress | None = None,
            exclude: Sequence[str] = DEFAULT_EXCLUDES) -> tuple[BuiltArtifact, list[Path]]:
    """Hash a model directory and build its ModelPack manifest (nothing uploaded).

    ``exclude``: gitignore-style patterns left out (default: the same as ``modelseal run``)."""
    progress = progress or Progress()
    files = scan_model_dir(model_dir, follow_symlinks=follow_symlinks, exclude=exclude)
    if not files:
        raise InputError(f"{model_dir} holds no files: nothing to package")
    advance = progress.start("hashing", sum(f.size for f in files))
    try:
        digests = hash_files([f.path for f in files], cache=cache, progress=advance)
    finally:
        progress.finish()
    built = build_artifact(digests, [f.relpath for f in files], metadata,
                           role_overrides=role_overrides)
    return built, [f.path for f in files]


def check_tag(store: Store, tag: str, built: BuiltArtifact, allow_retag: bool) -> str | None:
    """Refuse to move ``tag`` to other content. Returns the existing digest when the tag
    already holds this very content (then pushing is a no-op)."""
    existing = store.resolve(tag)
    if existing is None or existing == built.manifest_digest:
        return existing
    raw, _, _ = store.get_manifest(existing)
    with contextlib.suppress(Exception):
        old_cfg_digest = json.loads(raw)["config"]["digest"]
        old_cfg = store.get_blob_bytes(old_cfg_digest)
        if content_key(raw, old_cfg) == content_key(built.manifest_bytes, built.config_bytes):
            return existing
    if allow_retag:
        return None
    raise TagConflictError(
        f"tag {tag!r} in {store.describe()} already points at {existing}; this push would "
        f"move it to {built.manifest_digest}: refused",
        hint="push under a new tag (tags are immutable releases), or pass --allow-retag if "
             "moving the tag is really intended")


def push(model_dir: str | os.PathLike[str], store: Store, ref: Ref, metadata: ModelMetadata, *,
         role_overrides: Sequence[tuple[str, str]] = (), allow_retag: bool = False,
         follow_symlinks: bool = False, cache: DigestCache | None = None,
         progress: Progress | None = None, workers: int = 4,
         exclude: Sequence[str] = DEFAULT_EXCLUDES) -> PushResult:
    """Package ``model_dir`` and push it to ``store`` under ``ref.tag``."""
    progress = progress or Progress()
    if ref.digest:
        raise UsageError(f"cannot push to {ref}: push to a tag; the digest is computed")
    built, paths = package(model_dir, metadata, role_overrides=role_overrides,
                           follow_symlinks=follow_symlinks, cache=cache, progress=progress,
                           exclude=exclude)
    tag = ref.tag
    total = sum(la.size for la in built.layers)
    result = PushResult(str(ref.with_tag(tag)), built.manifest_digest, tag, len(built.layers),
                        total, manifest=built)
    if tag is not None:
        existing = check_tag(store, tag, built, allow_retag)
        if existing is not None:
            result.digest, result.unchanged = existing, True
            return result

    # Blobs first (several at once: small files are dominated by round trips), manifest last.
    unique = {la.digest: (la, p) for la, p in zip(built.layers, paths, strict=True)}
    advance = progress.start("uploading", sum(la.size for la, _ in unique.values()))
    try:
        def upload(item: tuple[str, tuple[Layer, Path]]) -> tuple[bool, int]:
            digest, (layer, path) = item
            return store.put_blob_file(path, digest, layer.size, advance), layer.size

        with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
            for sent, size in ex.map(upload, unique.items()):
                if sent:
                    result.uploaded_blobs += 1
                    result.uploaded_bytes += size
    finally:
        progress.finish()
    store.put_blob_bytes(built.config_bytes)
    store.put_manifest(built.manifest_bytes, MANIFEST_V1, tag)
    return result


def fetch_model_manifest(store: Store, ref: Ref) -> ModelManifest:
    """Resolve ``ref`` once and return its parsed, path-checked manifest."""
    raw, _, digest = store.get_manifest(ref.reference)
    if ref.digest and digest != ref.digest:
        raise InputError(f"{store.describe()} returned manifest {digest} for {ref.digest}")
    return parse_model_manifest(raw, digest)


@dataclass
class PullResult:
    ref: str
    digest: str
    target: str
    files: int
    bytes_total: int

    def to_dict(self) -> dict[str, object]:
        return {"ref": self.ref, "digest": self.digest, "target": self.target,
                "files": self.files, "bytes": self.bytes_total}


def _check_target(target: Path, manifest: ModelManifest, overwrite: bool) -> None:
    """Refuse paths that would pass through a symlink or clobber files in ``target``."""
    if not target.exists():
        return
    if target.is_symlink() or not target.is_dir():
        raise InputError(f"pull target {target} exists and is not a directory")
    for layer in manifest.layers:
        parts = layer.filepath.split("/")
        cur = target
        for i, part in enumerate(parts):
            cur = cur / part
            if cur.is_symlink():
                raise UnsafePathError(
                    f"{layer.filepath} would be written through the symbolic link {cur}: refused")
            if i < len(parts) - 1 and cur.exists() and not cur.is_dir():
                raise InputError(f"{layer.filepath}: {cur} exists and is not a directory")
        if cur.exists() and (cur.is_dir() or not overwrite):
            raise InputError(f"{cur} already exists in the pull target: refused",
                             hint="pull into a new or empty directory, or pass --overwrite")


def pull(store: Store, ref: Ref, target_dir: str | os.PathLike[str], *,
         manifest: ModelManifest | None = None, overwrite: bool = False,
         progress: Progress | None = None, workers: int = 4) -> PullResult:
    """Pull a ModelPack artifact into ``target_dir``, byte for byte, or leave it untouched."""
    progress = progress or Progress()
    target = Path(target_dir)
    manifest = manifest or fetch_model_manifest(store, ref)
    _check_target(target, manifest, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.modelseal-pull-",
                                    dir=target.parent))
    try:
        total = sum(la.size for la in manifest.layers)
        advance = progress.start("downloading", total)
        try:
            def fetch(layer: Layer) -> None:
                dest = staging.joinpath(*layer.filepath.split("/"))
                dest.parent.mkdir(parents=True, exist_ok=True)
                with open(dest, "xb") as out:
                    store.fetch_blob(layer.digest, layer.size, out, advance)

            with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
                list(ex.map(fetch, manifest.layers))
        finally:
            progress.finish()
        _move_into_place(staging, target, [la.filepath for la in manifest.layers], overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return PullResult(str(ref.with_digest(manifest.digest)), manifest.digest, str(target),
                      len(manifest.layers), sum(la.size for la in manifest.layers))


def _move_into_place(staging: Path, target: Path, relpaths: list[str], overwrite: bool) -> None:
    if not target.exists():
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp made it 0700; the target gets the usual mode
        os.rename(staging, target)  # one atomic step
        staging.mkdir()  # so the caller's cleanup has something to remove
        return
    backups = staging / ".replaced"
    moved: list[tuple[Path, Path | None]] = []  # (dest, backup of what it replaced)
    made_dirs: list[Path] = []
    try:
        for i, rel in enumerate(relpaths):
            src = staging.joinpath(*rel.split("/"))
            dest = target.joinpath(*rel.split("/"))
            for parent in reversed(dest.parents):
                if parent.is_relative_to(target) and not parent.exists():
                    parent.mkdir()
                    made_dirs.append(parent)
            backup = None
            if dest.exists() or dest.is_symlink():
                if not overwrite or dest.is_symlink() or dest.is_dir():
                    raise InputError(f"{dest} appeared in the pull target while pulling: refused")
                backups.mkdir(exist_ok=True)
                backup = backups / str(i)
                os.rename(dest, backup)
            os.rename(src, dest)
            moved.append((dest, backup))
    except BaseException:
        for dest, backup in reversed(moved):
            with contextlib.suppress(OSError):
                dest.unlink()
                if backup is not None:
                    os.rename(backup, dest)
        for d in reversed(made_dirs):
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
