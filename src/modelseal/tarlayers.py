"""Very many files: small files grouped into deterministic tar layers, with a signed file list.

A registry refuses manifests past 4 MiB (distribution's limit, the common one), and a
manifest with one layer per file reaches it near 16,000 files. Past a threshold a model is
*packed* (docs/format.md, "Very many files"): files of at least ``RAW_MIN_BYTES`` stay raw
layers; smaller ones go, grouped by role in sorted path order, into uncompressed tar layers
written deterministically (sorted names, mtime 0, uid/gid 0, mode 0644, regular files only).
One more layer, the *file list* (``FILE_LIST_MEDIA_TYPE``), names every file inside every
tar layer with its sha256 and size: it is content-addressed and listed in the manifest, so a
signature over the manifest covers it, and a verifier knows every file's digest without
downloading a tar.

Unpacking trusts neither the tar nor its producer: every member path is checked like a layer
path, only regular files (and directories above listed files) are accepted, no links, no
devices, no duplicates, nothing not in the file list, nothing missing, and each file is
hashed while written and compared with the list.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from modelseal._util.json import loads_object
from modelseal._util.limits import MiB
from modelseal.errors import DigestMismatchError, InputError, UnsafePathError
from modelseal.formats import FILE_LIST_MEDIA_TYPE
from modelseal.refs import DIGEST_RE

"""The layer that lists the files inside the tar layers of a packed model."""

PACK_FILES_THRESHOLD = 10_000
"""A model with more files than this is packed (fewer round trips, a small manifest)."""

MANIFEST_SAFE_BYTES = 3 * MiB + MiB // 2
"""A model whose one-layer-per-file manifest would be larger than this is packed too."""

MANIFEST_LIMIT_BYTES = 4 * MiB
"""The largest manifest registries accept (distribution's ``maxManifestBodySize``; Harbor,
GHCR, ECR and Docker Hub cap at 4 MiB too). A model whose manifest would still be larger once
packed is refused before anything is uploaded."""

RAW_MIN_BYTES = 16 * MiB
"""In a packed model, files of at least this size stay raw layers (one blob per file)."""

TAR_MAX_FILES = 4096
"""Most files in one tar layer."""

TAR_MAX_BYTES = 256 * MiB
"""Largest tar layer (file bytes; headers add 512 bytes per file and padding)."""

MAX_FILE_LIST_BYTES = 64 * MiB
"""Largest file list read (about 450,000 files at typical path lengths)."""


@dataclass(frozen=True)
class Member:
    """A file inside a tar layer: path in the model, sha256 digest (``sha256:<hex>``), size."""

    path: str
    digest: str
    size: int


@dataclass(frozen=True)
class SourceFile:
    """A small file to pack: its member entry and where it is on disk."""

    member: Member
    source: Path


def plan_groups(files: Iterable[tuple[str, SourceFile]]) -> list[tuple[str, list[SourceFile]]]:
    """Group (role, file) pairs into tar layers: by role (in the order given by the first file
    of each role), then in path order, cut at ``TAR_MAX_FILES`` files or ``TAR_MAX_BYTES``."""
    by_role: dict[str, list[SourceFile]] = {}
    for role, f in files:
        by_role.setdefault(role, []).append(f)
    groups: list[tuple[str, list[SourceFile]]] = []
    for role in sorted(by_role):
        cur: list[SourceFile] = []
        size = 0
        for f in sorted(by_role[role], key=lambda s: s.member.path):
            if cur and (len(cur) >= TAR_MAX_FILES or size + f.member.size > TAR_MAX_BYTES):
                groups.append((role, cur))
                cur, size = [], 0
            cur.append(f)
            size += f.member.size
        if cur:
            groups.append((role, cur))
    return groups


class _HashingWriter:
    """A write-only file object that hashes what goes through it."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.out.write(data)

    def tell(self) -> int:
        return self.size


class _HashingReader:
    """A read-only file object that hashes what is read from it."""

    def __init__(self, src: IO[bytes]) -> None:
        self.src = src
        self.hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(n)
        self.hash.update(data)
        return data


def tar_info(path: str, size: int) -> tarfile.TarInfo:
    """The fixed header of a packed file: only the name and size vary."""
    ti = tarfile.TarInfo(path)
    ti.size = size
    ti.mtime = 0
    ti.mode = 0o644
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.type = tarfile.REGTYPE
    return ti


def write_tar(files: Sequence[SourceFile], out_path: Path) -> tuple[str, int]:
    """Write the deterministic tar of ``files`` (already sorted) to ``out_path``; returns its
    (digest, size). Every file is hashed again while copied: a file that changed since it was
    hashed is refused (the file list would lie)."""
    with open(out_path, "xb") as raw:
        sink = _HashingWriter(raw)
        with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                          encoding="utf-8") as tf:
            for f in files:
                m = f.member
                try:
                    with open(f.source, "rb") as src:
                        reader = _HashingReader(src)
                        tf.addfile(tar_info(m.path, m.size), reader)
                        extra = src.read(1)
                except OSError as e:
                    raise InputError(f"{m.path} changed or vanished while packaging "
                                     f"({e.strerror or e}): refused") from e
                if extra or "sha256:" + reader.hash.hexdigest() != m.digest:
                    raise InputError(f"{m.path} changed while packaging: its content no longer "
                                     "matches the digest computed a moment ago: refused")
        raw.flush()
        os.fsync(raw.fileno())
    return "sha256:" + sink.hash.hexdigest(), sink.size


def file_list_doc(groups: Sequence[tuple[str, Sequence[Member]]]) -> dict[str, Any]:
    """The file list of (tar layer digest, members) pairs, in manifest order."""
    return {"mediaType": FILE_LIST_MEDIA_TYPE,
            "layers": [{"digest": digest,
                        "files": [{"path": m.path, "digest": m.digest, "size": m.size}
                                  for m in members]}
                       for digest, members in groups]}


def parse_file_list(data: bytes, what: str) -> dict[str, list[Member]]:
    """tar layer digest -> its members, from a file list blob; refuses anything malformed
    (paths are checked by the caller, which knows the rest of the manifest)."""
    doc = loads_object(data, what=what, max_bytes=MAX_FILE_LIST_BYTES)
    if doc.get("mediaType") != FILE_LIST_MEDIA_TYPE:
        raise InputError(f"{what}: mediaType is {doc.get('mediaType')!r}, not "
                         f"{FILE_LIST_MEDIA_TYPE}")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise InputError(f"{what}: 'layers' must be an array")
    out: dict[str, list[Member]] = {}
    for i, entry in enumerate(layers):
        if not isinstance(entry, dict) or not isinstance(entry.get("files"), list):
            raise InputError(f"{what}: layers[{i}] must be an object with a 'files' array")
        digest = entry.get("digest")
        if not isinstance(digest, str) or not DIGEST_RE.match(digest):
            raise InputError(f"{what}: layers[{i}] has no valid sha256 digest")
        if digest in out:
            raise InputError(f"{what}: tar layer {digest} is listed twice: refused")
        members: list[Member] = []
        for j, f in enumerate(entry["files"]):
            if not isinstance(f, dict):
                raise InputError(f"{what}: layers[{i}].files[{j}] is not an object")
            path, d, size = f.get("path"), f.get("digest"), f.get("size")
            if (not isinstance(path, str) or not isinstance(d, str) or not DIGEST_RE.match(d)
                    or type(size) is not int or size < 0):
                raise InputError(f"{what}: layers[{i}].files[{j}] needs a path, a sha256 "
                                 "digest and a size")
            members.append(Member(path, d, size))
        if not members:
            raise InputError(f"{what}: tar layer {digest} lists no files: refused")
        out[digest] = members
    return out


_TYPE_NAMES = {tarfile.SYMTYPE: "a symbolic link", tarfile.LNKTYPE: "a hard link",
               tarfile.CHRTYPE: "a character device", tarfile.BLKTYPE: "a block device",
               tarfile.FIFOTYPE: "a FIFO", tarfile.CONTTYPE: "a contiguous file",
               tarfile.GNUTYPE_SPARSE: "a sparse file"}


def unpack_tar(tar_path: Path, members: Sequence[Member], dest: Path, *, what: str,
               on_file: Callable[[], None] | None = None, fsync: bool = True) -> None:
    """Unpack the tar at ``tar_path`` (already checked against its layer digest) into
    ``dest``, accepting exactly ``members``; each written file is fsynced unless ``fsync`` is
    False (the caller then flushes the whole file system once).

    Refused (UnsafePathError, exit 2): a member path that is absolute, has ``..``/``.``/empty
    parts or a backslash; links, devices, FIFOs, sparse files; a member named twice or not in
    the file list; a directory entry that is not above a listed file. Refused as a digest
    mismatch (exit 4): a size or content other than the list says, a listed file missing.
    """
    from modelseal._util.fs import safe_relpath

    expected = {m.path: m for m in members}
    dirs = {"/".join(p.split("/")[:k]) for p in expected for k in range(1, p.count("/") + 1)}
    seen: set[str] = set()
    made: set[Path] = set()
    try:
        with tarfile.open(tar_path, mode="r:", encoding="utf-8") as tf:
            while True:
                ti = tf.next()
                if ti is None:
                    break
                name = ti.name
                try:
                    safe_relpath(name)
                except UnsafePathError as e:
                    raise UnsafePathError(f"{what}: member {name!r}: {e}") from e
                if ti.type == tarfile.DIRTYPE:
                    if name not in dirs:
                        raise UnsafePathError(f"{what}: directory {name!r} holds no file of "
                                              "the file list: refused")
                    continue
                if ti.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
                    kind = _TYPE_NAMES.get(ti.type, f"of tar type {ti.type!r}")
                    raise UnsafePathError(f"{what}: member {name!r} is {kind}: only regular "
                                          "files are unpacked: refused")
                if name in seen:
                    raise UnsafePathError(f"{what}: member {name!r} appears twice: refused")
                m = expected.get(name)
                if m is None:
                    raise UnsafePathError(f"{what}: member {name!r} is not in the model's "
                                          "file list: refused")
                seen.add(name)
                if ti.size != m.size:
                    raise DigestMismatchError(f"{what}: {name} is {ti.size} bytes in the tar, "
                                              f"the file list says {m.size}")
                out = dest.joinpath(*name.split("/"))
                if out.parent not in made:
                    out.parent.mkdir(parents=True, exist_ok=True)
                    made.add(out.parent)
                _write_member(tf, ti, out, m, what, fsync)
                if on_file is not None:
                    on_file()
    except (tarfile.TarError, EOFError, UnicodeError) as e:
        raise InputError(f"{what} is not a readable uncompressed tar: {e}") from e
    missing = sorted(set(expected) - seen)
    if missing:
        raise DigestMismatchError(f"{what} lacks {len(missing)} file(s) of the file list, "
                                  f"e.g. {missing[0]!r}")


def _write_member(tf: tarfile.TarFile, ti: tarfile.TarInfo, out_path: Path, m: Member,
                  what: str, fsync: bool) -> None:
    src = tf.extractfile(ti)
    if src is None:  # not a regular file: excluded above
        raise UnsafePathError(f"{what}: member {ti.name!r} has no content: refused")
    h = hashlib.sha256()
    with src, open(out_path, "xb") as out:
        while True:
            chunk = src.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
            out.write(chunk)
        if fsync:
            out.flush()
            os.fsync(out.fileno())
    if "sha256:" + h.hexdigest() != m.digest:
        raise DigestMismatchError(f"{what}: {m.path} hashes to sha256:{h.hexdigest()}, the "
                                  f"file list says {m.digest}")
