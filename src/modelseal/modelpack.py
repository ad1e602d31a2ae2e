"""Model directory <-> CNCF ModelPack manifest and config (DESIGN.md section 2).

One raw layer per file; the layer digest is the sha256 of the file itself. Models with very
many files are *packed*: small files go into tar layers listed in a signed file list
(``modelseal.tarlayers``, docs/format.md "Very many files"). Paths in a manifest and its file
list are validated here, before anything is written anywhere (``parse_model_manifest``,
``with_file_list``).
"""

from __future__ import annotations

import fnmatch
import json
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cache
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

from modelseal._util.fs import check_filepath
from modelseal._util.json import check_value, type_name
from modelseal._util.json import loads_object as load_json_object
from modelseal._util.limits import MAX_METADATA_BYTES
from modelseal._util.time import created_time, rfc3339
from modelseal.digest import DEFAULT_EXCLUDES, FileDigest, PathExcluder
from modelseal.errors import InputError, UnsafePathError, UsageError
from modelseal.formats import (
    ANN_CREATED,
    ANN_FILEPATH,
    ANN_NAME,
    ANN_TITLE,
    ANN_VERSION,
    ARTIFACT_TYPE,
    CONFIG_MEDIA_TYPE,
    FILE_LIST_MEDIA_TYPE,
    MANIFEST_V1,
    MEDIA_TYPES,
    ROLE_BY_TAR_MEDIA_TYPE,
    ROLES,
    TAR_MEDIA_TYPES,
)
from modelseal.oci.store import Descriptor, canonical_json
from modelseal.tarlayers import (
    MANIFEST_LIMIT_BYTES,
    MANIFEST_SAFE_BYTES,
    MAX_FILE_LIST_BYTES,
    PACK_FILES_THRESHOLD,
    RAW_MIN_BYTES,
    Member,
    SourceFile,
    file_list_doc,
    parse_file_list,
    plan_groups,
    write_tar,
)

# Annotations whose value changes on every push without the content changing.
VOLATILE_ANNOTATIONS = frozenset({ANN_CREATED})

_WEIGHT_CONFIG_NAMES = {
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "tokenizer.model", "vocab.json", "vocab.txt", "merges.txt",
    "preprocessor_config.json", "added_tokens.json", "chat_template.jinja",
    "model.safetensors.index.json", "pytorch_model.bin.index.json", "params.json",
    "sentencepiece.bpe.model", "spiece.model",
}
_DOC_GLOBS = ("readme*", "license*", "licence*", "notice*", "*.md", "*.rst", "*.pdf",
              "model_card*", "modelcard*", "copying*", "citation*")
_CODE_GLOBS = ("*.py", "*.sh", "*.ipynb", "*.js", "*.ts", "*.cpp", "*.c", "*.h", "*.cu",
               "*.go", "*.rs", "*.java", "requirements*.txt", "pyproject.toml", "setup.cfg",
               "dockerfile", "makefile", "*.toml")
_DATASET_GLOBS = ("*.csv", "*.tsv", "*.parquet", "*.jsonl", "*.arrow", "*.tfrecord",
                  "*.avro", "*.feather")
_DATASET_DIRS = ("data", "dataset", "datasets")


def classify(relpath: str, overrides: Sequence[tuple[str, str]] = ()) -> str:
    """The ModelPack role of a file: weight, weight.config, doc, code or dataset.

    ``overrides`` are (glob, role) pairs matched against the relative path first; the last
    match wins.
    """
    role: str | None = None
    for pattern, r in overrides:
        if fnmatch.fnmatchcase(relpath, pattern) or fnmatch.fnmatchcase(
                PurePosixPath(relpath).name, pattern):
            role = r
    if role is not None:
        return role
    name = PurePosixPath(relpath).name.lower()
    parts = [p.lower() for p in PurePosixPath(relpath).parts[:-1]]
    if name in _WEIGHT_CONFIG_NAMES:
        return "weight.config"
    if any(fnmatch.fnmatchcase(name, g) for g in _DOC_GLOBS):
        return "doc"
    if any(fnmatch.fnmatchcase(name, g) for g in _CODE_GLOBS):
        return "code"
    if any(fnmatch.fnmatchcase(name, g) for g in _DATASET_GLOBS) or any(
            p in _DATASET_DIRS for p in parts):
        return "dataset"
    return "weight"


def parse_role_overrides(items: Sequence[str]) -> list[tuple[str, str]]:
    """Parse ``GLOB=ROLE`` options."""
    out = []
    for item in items:
        pattern, sep, role = item.rpartition("=")
        if not sep or not pattern:
            raise UsageError(f"media type override {item!r}: write GLOB=ROLE, e.g. '*.bin=weight'")
        if role not in ROLES:
            raise UsageError(f"media type override {item!r}: role must be one of "
                             f"{', '.join(ROLES)}")
        out.append((pattern, role))
    return out


@dataclass(frozen=True)
class ModelFile:
    relpath: str  # '/'-separated, relative to the model root
    path: Path  # on disk (the symlink target's content when following links)
    size: int


def scan_model_dir(root: str | os.PathLike[str], *, follow_symlinks: bool = False,
                   exclude: Sequence[str] = DEFAULT_EXCLUDES) -> list[ModelFile]:
    """Every regular file below ``root`` not matched by the gitignore-style ``exclude``
    patterns (default: the same as ``modelseal run``), sorted by relative path.

    Refuses symlinks (unless ``follow_symlinks``, and then only to files inside ``root``),
    device files, sockets, FIFOs and unreadable files, naming the file.
    """
    base = Path(root)
    if not base.is_dir():
        raise InputError(f"{base} is not a directory")
    real_root = base.resolve()
    files: list[ModelFile] = []
    ex = PathExcluder(exclude)

    def walk(d: Path, rel: str) -> None:
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            raise InputError(f"cannot read directory {d}: {e.strerror or e}") from e
        for entry in entries:
            r = f"{rel}{entry.name}"
            if ex.dir(r) if entry.is_dir() else ex.file(r):
                continue
            p = Path(entry.path)
            if entry.is_symlink():
                if not follow_symlinks:
                    raise InputError(
                        f"{r} is a symbolic link: modelseal packages file content only",
                        hint="replace the link by the file, or pass --follow-symlinks to "
                             "record the content of links that stay inside the model directory")
                target = p.resolve()
                if not target.is_relative_to(real_root):
                    raise InputError(f"{r} is a symbolic link to {target}, outside the model "
                                     "directory: refused")
                if target.is_dir():
                    raise InputError(f"{r} is a symbolic link to a directory: refused")
            st = p.stat() if follow_symlinks else p.lstat()
            if stat.S_ISDIR(st.st_mode):
                walk(p, r + "/")
            elif stat.S_ISREG(st.st_mode):
                if not os.access(p, os.R_OK):
                    raise InputError(f"{r} is not readable (permission denied)")
                files.append(ModelFile(r, p, st.st_size))
            else:
                kind = ("device file" if stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode)
                        else "FIFO" if stat.S_ISFIFO(st.st_mode)
                        else "socket" if stat.S_ISSOCK(st.st_mode) else "special file")
                raise InputError(f"{r} is a {kind}: only regular files can be packaged")

    walk(base, "")
    files.sort(key=lambda f: f.relpath)
    return files


@dataclass
class ModelMetadata:
    """What the user tells us about the model: the ModelPack descriptor and config."""

    descriptor: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    _DESCRIPTOR_KEYS = ("name", "version", "family", "authors", "vendor", "licenses", "title",
                        "description", "docURL", "sourceURL", "datasetsURL", "revision",
                        "createdAt")
    _CONFIG_KEYS = ("architecture", "format", "paramSize", "precision", "quantization",
                    "capabilities")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "metadata") -> ModelMetadata:
        """Accepts either {descriptor:{}, config:{}, annotations:{}} or a flat mapping."""
        md = cls()
        known = {"descriptor", "config", "annotations"}
        if known & set(data):
            unknown = set(data) - known
            if unknown:
                raise InputError(f"{source}: unknown keys {sorted(unknown)}; expected "
                                 "descriptor, config, annotations")
            parts = {}
            for key in ("descriptor", "config", "annotations"):
                part = data.get(key)
                if part is None:
                    part = {}
                if not isinstance(part, Mapping):
                    raise InputError(f"{source}: {key} must be a mapping, not "
                                     f"{type_name(part)}")
                parts[key] = part
            md.descriptor = dict(parts["descriptor"])
            md.config = dict(parts["config"])
            for k, v in parts["annotations"].items():
                if isinstance(v, Mapping | list):
                    raise InputError(f"{source}: annotation {k!r} must be a string, not "
                                     f"{type_name(v)}")
                md.annotations[str(k)] = str(v)
            return md
        for k, v in data.items():
            if k in cls._DESCRIPTOR_KEYS:
                md.descriptor[k] = v
            elif k in cls._CONFIG_KEYS:
                md.config[k] = v
            else:
                raise InputError(
                    f"{source}: unknown key {k!r}; known: "
                    f"{', '.join(cls._DESCRIPTOR_KEYS + cls._CONFIG_KEYS)}")
        return md

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ModelMetadata:
        """Read a YAML or JSON metadata file."""
        p = Path(path)
        try:
            with open(p, "rb") as f:
                raw = f.read(MAX_METADATA_BYTES + 1)
        except OSError as e:
            raise InputError(f"cannot read metadata file {p}: {e.strerror or e}") from e
        if len(raw) > MAX_METADATA_BYTES:
            raise InputError(f"metadata file {p} is larger than {MAX_METADATA_BYTES} bytes")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"metadata file {p} is not UTF-8 text (byte {e.start})") from e
        try:
            import yaml

            data = yaml.safe_load(text)
        except Exception as e:  # yaml's errors carry the line and column
            raise InputError(f"metadata file {p} is not valid YAML/JSON: {e}") from e
        if not isinstance(data, dict):
            raise InputError(f"metadata file {p} must hold a mapping")
        # plain JSON values only: dates, binary, NaN, alias bombs and lone surrogates would
        # crash (or blow up) the config's serialization later
        check_value(data, what=f"metadata file {p}")
        return cls.from_mapping(data, str(p))

    def merged(self, other: ModelMetadata) -> ModelMetadata:
        """``other`` wins where both say something."""
        return ModelMetadata({**self.descriptor, **other.descriptor},
                             {**self.config, **other.config},
                             {**self.annotations, **other.annotations})


@cache
def _config_schema() -> dict[str, Any]:
    text = resources.files("modelseal").joinpath("data/modelpack-config-schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate_config(config: Mapping[str, Any]) -> None:
    """Validate a ModelPack config against the spec's JSON schema; InputError on failure."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(
        _config_schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.path))
    if errors:
        msgs = "; ".join(f"{'/'.join(map(str, e.path)) or '(root)'}: {e.message}"
                         for e in errors[:5])
        raise InputError(f"ModelPack config is not valid: {msgs}")


@dataclass(frozen=True)
class Layer:
    """One file of the model. For a file inside a tar layer, ``descriptor`` describes the file
    (its raw media type, digest and size; it is no blob of its own) and ``packed_in`` is the
    digest of the tar layer that carries it."""

    filepath: str
    descriptor: Descriptor
    packed_in: str | None = None

    @property
    def digest(self) -> str:
        return self.descriptor.digest

    @property
    def size(self) -> int:
        return self.descriptor.size

    @property
    def media_type(self) -> str:
        return self.descriptor.media_type


@dataclass(frozen=True)
class BuiltArtifact:
    """A ModelPack artifact ready to upload: manifest last.

    ``layers`` is one entry per file; a packed model also has its tar layers written to
    files (``tars``: digest -> path, under ``scratch``, which the caller removes) and its
    file list (``file_list``)."""

    layers: list[Layer]
    config_bytes: bytes
    config_descriptor: Descriptor
    manifest_bytes: bytes
    tars: dict[str, Path] = field(default_factory=dict)
    file_list: bytes | None = None
    scratch: Path | None = None

    @property
    def manifest_digest(self) -> str:
        from modelseal.digest import sha256_bytes

        return sha256_bytes(self.manifest_bytes)


def build_artifact(files: Sequence[FileDigest], relpaths: Sequence[str],
                   metadata: ModelMetadata, *,
                   role_overrides: Sequence[tuple[str, str]] = (),
                   created: datetime | None = None, pack: bool | None = None,
                   scratch: Path | Callable[[], Path] | None = None) -> BuiltArtifact:
    """The ModelPack config and manifest for hashed files (``relpaths`` parallel to ``files``).

    ``pack``: None packs when the model has more than ``PACK_FILES_THRESHOLD`` files or its
    one-layer-per-file manifest would exceed ``MANIFEST_SAFE_BYTES``; True and False force it.
    Packing writes tar layers into the existing directory ``scratch``, or into the one the
    callable ``scratch`` makes (called only when packing; required then). A
    manifest that would exceed ``MANIFEST_LIMIT_BYTES`` is refused before anything is written.
    """
    if not files:
        raise InputError("the model directory holds no files: nothing to package")
    created = created or created_time()
    layers = []
    roles: list[str] = []
    for fd, rel in zip(files, relpaths, strict=True):
        check_filepath(rel)
        role = classify(rel, role_overrides)
        roles.append(role)
        layers.append(Layer(rel, Descriptor(
            MEDIA_TYPES[role], fd.digest, fd.size,
            annotations={ANN_TITLE: PurePosixPath(rel).name, ANN_FILEPATH: rel})))
    descriptor = {"createdAt": rfc3339(created), **metadata.descriptor}
    if "name" not in descriptor:
        raise UsageError("the model needs a name: pass --name or give one in --metadata")
    check_value(metadata.annotations, what="model annotations")
    # what the user gave (e.g. a non-UTF-8 --name from argv); diffIds are ours and may be many
    check_value({"descriptor": descriptor, "config": metadata.config}, what="model metadata")

    def assemble(blobs: Sequence[Descriptor]) -> tuple[bytes, Descriptor, bytes]:
        config = {
            "descriptor": descriptor,
            "config": dict(metadata.config),
            "modelfs": {"type": "layers", "diffIds": [d.digest for d in blobs]},
        }
        validate_config(config)
        config_bytes = canonical_json(config)
        from modelseal.digest import sha256_bytes

        config_desc = Descriptor(CONFIG_MEDIA_TYPE, sha256_bytes(config_bytes),
                                 len(config_bytes))
        annotations = {ANN_CREATED: rfc3339(created), ANN_NAME: str(descriptor["name"])}
        if "version" in descriptor:
            annotations[ANN_VERSION] = str(descriptor["version"])
        annotations.update(metadata.annotations)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_V1,
            "artifactType": ARTIFACT_TYPE,
            "config": config_desc.to_dict(),
            "layers": [d.to_dict() for d in blobs],
            "annotations": annotations,
        }
        return config_bytes, config_desc, canonical_json(manifest)

    if pack is False or (pack is None and len(layers) <= PACK_FILES_THRESHOLD):
        config_bytes, config_desc, manifest_bytes = assemble([la.descriptor for la in layers])
        if pack is False or len(manifest_bytes) <= MANIFEST_SAFE_BYTES:
            _check_manifest_size(len(manifest_bytes), len(layers), len(layers), 0)
            return BuiltArtifact(layers, config_bytes, config_desc, manifest_bytes)
    if scratch is None:
        raise UsageError("packing a model with very many files needs a scratch directory")
    return _build_packed(files, layers, roles, scratch, assemble)


def _check_manifest_size(size: int, files: int, raw: int, tars: int) -> None:
    """Refuse, before any upload, a manifest that registries would refuse at the end."""
    if size <= MANIFEST_LIMIT_BYTES:
        return
    shape = (f"{raw:,} raw layers" if not tars else
             f"{raw:,} raw layers of files of {RAW_MIN_BYTES // (1 << 20)} MiB or more, "
             f"{tars:,} tar layers and a file list")
    raise InputError(
        f"the model's manifest would be {size:,} bytes for {files:,} files ({shape}): "
        f"registries refuse manifests over {MANIFEST_LIMIT_BYTES:,} bytes (4 MiB), so it "
        "cannot be pushed: refused before uploading anything",
        hint="split the model into several artifacts, or merge small files (docs/format.md, "
             "'Very many files', gives the rule and the limits)")


_PLACEHOLDER = "sha256:" + "0" * 64


def _build_packed(files: Sequence[FileDigest], layers: list[Layer], roles: list[str],
                  scratch_dir: Path | Callable[[], Path],
                  assemble: Any) -> BuiltArtifact:
    raw = [la for la in layers if la.size >= RAW_MIN_BYTES]
    small = [(role, SourceFile(Member(la.filepath, la.digest, la.size), fd.path))
             for la, role, fd in zip(layers, roles, files, strict=True)
             if la.size < RAW_MIN_BYTES]
    groups = plan_groups(small)
    if not groups:  # every file is large: one raw layer each, as for any model
        config_bytes, config_desc, manifest_bytes = assemble([la.descriptor for la in layers])
        _check_manifest_size(len(manifest_bytes), len(layers), len(layers), 0)
        return BuiltArtifact(layers, config_bytes, config_desc, manifest_bytes)
    # Sizes first, with placeholder digests of the real length: refuse before writing a tar.
    listed = [(_PLACEHOLDER, [f.member for f in g]) for _, g in groups]
    list_size = len(canonical_json(file_list_doc(listed)))
    if list_size > MAX_FILE_LIST_BYTES:
        raise InputError(
            f"the file list of the model's {len(small):,} small files would be "
            f"{list_size:,} bytes, over the {MAX_FILE_LIST_BYTES:,} bytes a verifier reads: "
            "refused before uploading anything",
            hint="split the model into several artifacts (docs/format.md, 'Very many files')")
    big = 10 ** 15  # the widest size a tar layer will have
    estimate = [la.descriptor for la in raw] + [
        Descriptor(TAR_MEDIA_TYPES[role], _PLACEHOLDER, big) for role, _ in groups] + [
        Descriptor(FILE_LIST_MEDIA_TYPE, _PLACEHOLDER, big)]
    _check_manifest_size(len(assemble(estimate)[2]), len(layers), len(raw), len(groups))
    scratch = scratch_dir() if callable(scratch_dir) else scratch_dir
    tar_descs: list[Descriptor] = []
    tars: dict[str, Path] = {}
    members: list[Layer] = []
    for i, (role, group) in enumerate(groups):
        path = scratch / f"layer-{i:05d}.tar"
        digest, size = write_tar(group, path)
        tar_descs.append(Descriptor(TAR_MEDIA_TYPES[role], digest, size))
        tars[digest] = path
        members.extend(Layer(f.member.path, Descriptor(
            MEDIA_TYPES[role], f.member.digest, f.member.size,
            annotations={ANN_TITLE: PurePosixPath(f.member.path).name,
                         ANN_FILEPATH: f.member.path}), packed_in=digest) for f in group)
    file_list = canonical_json(file_list_doc(
        [(d.digest, [f.member for f in g]) for d, (_, g) in zip(tar_descs, groups, strict=True)]))
    from modelseal.digest import sha256_bytes

    list_desc = Descriptor(FILE_LIST_MEDIA_TYPE, sha256_bytes(file_list), len(file_list))
    config_bytes, config_desc, manifest_bytes = assemble(
        [la.descriptor for la in raw] + tar_descs + [list_desc])
    _check_manifest_size(len(manifest_bytes), len(layers), len(raw), len(groups))
    file_view = sorted(raw + members, key=lambda la: la.filepath)
    return BuiltArtifact(file_view, config_bytes, config_desc, manifest_bytes, tars=tars,
                         file_list=file_list, scratch=scratch)


@dataclass(frozen=True)
class ModelManifest:
    """A parsed, path-checked ModelPack manifest.

    ``layers`` has one entry per file, files inside tar layers included once the file list
    is read (``with_file_list``); ``blobs`` are the manifest's layer descriptors as they are
    (raw layers, tar layers, the file list)."""

    digest: str
    raw: bytes
    config: Descriptor
    layers: list[Layer]
    annotations: dict[str, str]
    artifact_type: str | None
    blobs: list[Descriptor] = field(default_factory=list)
    file_list: Descriptor | None = None
    """The file list layer of a packed model."""
    complete: bool = True
    """False until the file list of a packed model is read: ``layers`` lacks packed files."""

    @property
    def files(self) -> dict[str, str]:
        """filepath -> digest: the final products a verifier compares with."""
        if not self.complete:
            raise InputError(f"manifest {self.digest}: its file list was not read, so the "
                             "files inside its tar layers are unknown")
        return {la.filepath: la.digest for la in self.layers}

    @property
    def tar_layers(self) -> list[tuple[Descriptor, list[Layer]]]:
        """Each tar layer with the files it carries, in manifest order."""
        by_tar: dict[str, list[Layer]] = {}
        for la in self.layers:
            if la.packed_in is not None:
                by_tar.setdefault(la.packed_in, []).append(la)
        return [(d, by_tar.get(d.digest, [])) for d in self.blobs
                if d.media_type in ROLE_BY_TAR_MEDIA_TYPE]


def parse_model_manifest(raw: bytes, digest: str) -> ModelManifest:
    """Parse a ModelPack manifest and refuse unsafe, conflicting or ambiguous content.

    The document must be an image manifest and nothing else: a document that is also an
    index (``manifests``) is refused, whatever its ``mediaType`` says (CVE-2021-41190:
    tools that read it as an index would see other content than we judge). A layer whose
    title is not the base name of its file path is refused: other tools name files by title.
    """
    what = f"manifest {digest}"
    doc = load_json_object(raw, what=what)
    media_type = doc.get("mediaType", MANIFEST_V1)
    if media_type != MANIFEST_V1:
        raise InputError(f"{what} has mediaType {media_type!r}, not an OCI image manifest "
                         f"({MANIFEST_V1})")
    if "manifests" in doc:
        raise InputError(f"{what} is ambiguous: it carries an index's 'manifests' next to a "
                         "manifest's config and layers (CVE-2021-41190): refused")
    if doc.get("schemaVersion") != 2:
        raise InputError(f"{what}: schemaVersion is {doc.get('schemaVersion')!r}, not 2")
    if "layers" not in doc or "config" not in doc:
        raise InputError(f"{what} is not an OCI image manifest (no config or no layers)")
    layer_docs = doc["layers"]
    if not isinstance(layer_docs, list):
        raise InputError(f"{what}: layers is {type_name(layer_docs)}, not an array")
    artifact_type = doc.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise InputError(f"{what}: artifactType is {type_name(artifact_type)}, not a string")
    annotations = doc.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
            isinstance(v, str) for v in annotations.values()):
        raise InputError(f"{what}: annotations must map strings to strings")
    config = Descriptor.from_dict(doc["config"], f"{what}: config")
    layers: list[Layer] = []
    blobs: list[Descriptor] = []
    tars: set[str] = set()
    file_list: Descriptor | None = None
    for i, ld in enumerate(layer_docs):
        desc = Descriptor.from_dict(ld, f"{what}: layer {i}")
        blobs.append(desc)
        if desc.media_type == FILE_LIST_MEDIA_TYPE:
            if file_list is not None:
                raise InputError(f"{what}: two file lists (layers of type "
                                 f"{FILE_LIST_MEDIA_TYPE}): refused")
            if desc.size > MAX_FILE_LIST_BYTES:
                raise InputError(f"{what}: its file list is {desc.size:,} bytes, over the "
                                 f"{MAX_FILE_LIST_BYTES:,} bytes a verifier reads: refused")
            file_list = desc
            continue
        if desc.media_type in ROLE_BY_TAR_MEDIA_TYPE:
            if desc.digest in tars:
                raise InputError(f"{what}: tar layer {desc.digest} appears twice: refused")
            tars.add(desc.digest)
            continue
        if ".tar" in desc.media_type:
            raise InputError(f"{what}: layer {i} ({desc.digest}) is a {desc.media_type} "
                             "layer: modelseal reads uncompressed ModelPack tar layers only "
                             f"({', '.join(sorted(ROLE_BY_TAR_MEDIA_TYPE))})")
        filepath = desc.annotations.get(ANN_FILEPATH)
        title = desc.annotations.get(ANN_TITLE)
        path = filepath or title
        if not path:
            raise InputError(f"{what}: layer {i} ({desc.digest}) names no file path")
        check_filepath(path)
        if filepath and title is not None and title != PurePosixPath(filepath).name:
            raise UnsafePathError(
                f"{what}: layer {i} ({desc.digest}) is titled {title!r} but its file path is "
                f"{filepath!r}: tools that name files by title would write another file: "
                "refused")
        layers.append(Layer(path, desc))
    _check_tree([la.filepath for la in layers], what)
    if tars and file_list is None:
        raise InputError(
            f"{what} has tar layers but no file list ({FILE_LIST_MEDIA_TYPE}): the files "
            "inside them cannot be known, hence not verified, without downloading them: "
            "refused", hint="repackage the model with modelseal push")
    if file_list is not None and not tars:
        raise InputError(f"{what} has a file list but no tar layer: refused")
    return ModelManifest(digest=digest, raw=raw, config=config, layers=layers,
                         annotations=dict(annotations), artifact_type=artifact_type,
                         blobs=blobs, file_list=file_list, complete=file_list is None)


def _check_tree(paths: Sequence[str], what: str) -> None:
    """Refuse a path named twice, or one that is both a file and a directory."""
    seen: set[str] = set()
    dirs: set[str] = set()
    for path in paths:
        if path in seen:
            raise UnsafePathError(f"{what}: file path {path!r} appears twice: refused")
        seen.add(path)
        parts = path.split("/")
        for k in range(1, len(parts)):
            dirs.add("/".join(parts[:k]))
    clash = seen & dirs
    if clash:
        raise UnsafePathError(f"{what}: {sorted(clash)[0]!r} is both a file and a "
                              "directory: refused")


def with_file_list(manifest: ModelManifest, data: bytes) -> ModelManifest:
    """``manifest`` completed with the files inside its tar layers, read from the file list
    blob ``data`` (already checked against its digest). Refuses a list that misses a tar
    layer or names one the manifest lacks, and any unsafe or clashing path."""
    if manifest.file_list is None or manifest.complete:
        return manifest
    what = f"file list {manifest.file_list.digest} of manifest {manifest.digest}"
    listed = parse_file_list(data, what)
    tars = {d.digest: d for d in manifest.blobs if d.media_type in ROLE_BY_TAR_MEDIA_TYPE}
    extra = sorted(set(listed) - set(tars))
    if extra:
        raise InputError(f"{what} names {extra[0]}, which is no tar layer of the manifest")
    missing = sorted(set(tars) - set(listed))
    if missing:
        raise InputError(f"{what} says nothing of tar layer {missing[0]}: refused")
    members: list[Layer] = []
    for digest, files in listed.items():
        tar = tars[digest]
        media_type = MEDIA_TYPES[ROLE_BY_TAR_MEDIA_TYPE[tar.media_type]]
        if sum(m.size for m in files) > tar.size:
            raise InputError(f"{what}: the files of tar layer {digest} add up to more than "
                             f"its {tar.size:,} bytes: refused")
        for m in files:
            check_filepath(m.path)
            members.append(Layer(m.path, Descriptor(
                media_type, m.digest, m.size,
                annotations={ANN_TITLE: PurePosixPath(m.path).name, ANN_FILEPATH: m.path}),
                packed_in=digest))
    layers = manifest.layers + members
    _check_tree([la.filepath for la in layers], what)
    return replace(manifest, layers=layers, complete=True)


def content_key(manifest: bytes, config: bytes) -> Any:
    """What a manifest and its config say, less creation timestamps.

    Two pushes of the same files with the same metadata have equal keys, so pushing an
    unchanged model again to its tag is a no-op rather than a retag.
    """
    try:
        m = load_json_object(manifest, what="manifest")
        c = load_json_object(config, what="config")
    except InputError:
        return None
    if not isinstance(m, dict) or not isinstance(c, dict):
        return None
    m.pop("config", None)
    anns, desc = m.get("annotations"), c.get("descriptor")
    for k in VOLATILE_ANNOTATIONS:
        if isinstance(anns, dict):
            anns.pop(k, None)
    if isinstance(desc, dict):
        desc.pop("createdAt", None)
    return [m, c]
