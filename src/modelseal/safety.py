"""Model safety: which files of a model could run code when loaded, and what they would import.

Every file a loader could execute code from (pickle, PyTorch checkpoints in zip or legacy form
including the ``data.pkl`` inside, joblib dumps plain or compressed, numpy ``.npy`` with object
arrays and ``.npz`` archives of them) is disassembled, never loaded, by picklescan: it lists the
globals (``module.name``) the pickle would import and rates each innocuous, suspicious or
dangerous. Formats that cannot carry Python code (safetensors, GGUF, ONNX, JSON, text) are
recorded as ``no-code-format`` after a check of their signature where one exists.

The result is a :class:`SafetyReport`; :func:`safety_predicate` turns it into the predicate of a
signed in-toto Statement and :func:`unsafe_findings` is the pure check the verifier runs on it.
"""

from __future__ import annotations

import ast
import bz2
import datetime as _dt
import gzip
import io
import json
import logging
import lzma
import os
import pickletools
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, cast

from modelseal.digest import hash_files
from modelseal.errors import InputError, UnsafePathError

SAFETY_PREDICATE = "https://modelseal.dev/attestation/model-safety/v1"
"""predicateType of the model-safety attestation (in-toto Statement v1)."""

SCANNER_NAME = "picklescan"

Verdict = Literal["safe", "unsafe", "suspicious", "no-code-format", "unknown"]
Severity = Literal["innocuous", "suspicious", "dangerous"]
VERDICTS: tuple[str, ...] = ("safe", "unsafe", "suspicious", "no-code-format", "unknown")
SEVERITIES: tuple[str, ...] = ("innocuous", "suspicious", "dangerous")

# Extensions loaders treat as pickles (torch.load, joblib.load, pickle.load, pandas.read_pickle).
_PICKLE_EXT = {".pkl", ".pickle", ".joblib", ".dat", ".data", ".pk", ".sav", ".dill", ".cloudpkl"}
_TORCH_EXT = {".pt", ".pth", ".bin", ".ckpt", ".pt2", ".mar"}
_NPY_EXT = {".npy"}
_ZIP_EXT = {".zip", ".npz"}
# Formats that hold data only; value = format name recorded in the report.
_NO_CODE_EXT = {
    ".safetensors": "safetensors", ".gguf": "gguf", ".ggml": "ggml", ".onnx": "onnx",
    ".json": "json", ".jsonl": "json", ".txt": "text", ".md": "text", ".rst": "text",
    ".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".csv": "text", ".tsv": "text",
    ".tiktoken": "text", ".model": "sentencepiece", ".spm": "sentencepiece",
    ".msgpack": "msgpack", ".tflite": "tflite", ".png": "image", ".jpg": "image",
    ".jpeg": "image", ".gif": "image", ".svg": "image", ".webp": "image", ".parquet": "parquet",
    ".arrow": "arrow", ".cfg": "text", ".ini": "text", ".license": "text",
}
# Formats that can carry code modelseal does not analyse: recorded as unknown, with a note.
_OPAQUE_EXT = {
    ".py": ("python-source", "Python source: runs if the model is loaded with remote code"),
    ".h5": ("hdf5", "Keras HDF5 can hold Lambda layers (marshalled Python); not analysed"),
    ".hdf5": ("hdf5", "Keras HDF5 can hold Lambda layers (marshalled Python); not analysed"),
    ".keras": ("keras", "Keras archives can hold Lambda layers; not analysed"),
    ".pb": ("tensorflow-graph", "TensorFlow graphs can call file and network ops; not analysed"),
    ".7z": ("7z-archive", "7z archives are not opened by modelseal"),
    ".so": ("native-library", "native code"),
    ".dll": ("native-library", "native code"),
    ".dylib": ("native-library", "native code"),
}
_TEXT_NAMES = {"license", "licence", "readme", "notice", "copying", "authors", ".gitattributes",
               ".gitignore", "tokenizer", "vocab", "merges"}

_PICKLE_MAGIC = tuple(bytes([0x80, v]) for v in range(2, 6))
_NPY_MAGIC = b"\x93NUMPY"
_GGUF_MAGIC = b"GGUF"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_GZIP_MAGIC = b"\x1f\x8b"
_BZ2_MAGIC = b"BZh"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_ZLIB_MAGIC = (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda")
_LZMA_MAGIC = b"\x5d\x00\x00"
_7Z_MAGIC = b"7z\xbc\xaf\x27\x1c"

# picklescan logs every finding as a warning; the report carries them, so keep them off stderr.
logging.getLogger("picklescan").addHandler(logging.NullHandler())
logging.getLogger("picklescan").propagate = False


@dataclass(frozen=True)
class Finding:
    """A global a pickle would import when loaded, e.g. ``os.system`` (severity ``dangerous``).

    ``member`` names the entry inside an archive (``archive/data.pkl``) when there is one.
    """

    callable: str
    severity: str
    member: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"callable": self.callable, "severity": self.severity}
        if self.member is not None:
            d["member"] = self.member
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        return cls(callable=str(d["callable"]), severity=str(d["severity"]),
                   member=None if d.get("member") is None else str(d["member"]))


@dataclass
class FileSafety:
    """The verdict on one file. ``path`` is relative to the model root and ``/``-separated."""

    path: str
    sha256: str  # hex
    format: str
    verdict: str
    findings: list[Finding] = field(default_factory=list)
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "path": self.path,
            "digest": {"sha256": self.sha256},
            "format": self.format,
            "verdict": self.verdict,
            "findings": [f.to_dict() for f in self.findings],
        }
        if self.note:
            d["note"] = self.note
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FileSafety:
        verdict = str(d["verdict"])
        if verdict not in VERDICTS:
            raise InputError(f"unknown safety verdict {verdict!r} for {d.get('path')!r}")
        return cls(
            path=str(d["path"]),
            sha256=str(d["digest"]["sha256"]),
            format=str(d["format"]),
            verdict=verdict,
            findings=[Finding.from_dict(f) for f in d.get("findings", [])],
            note=None if d.get("note") is None else str(d["note"]),
        )


@dataclass
class SafetyReport:
    """Per-file results of one scan of a model directory."""

    files: list[FileSafety]
    scanner: str = SCANNER_NAME
    scanner_version: str = ""
    scanned_at: str = ""  # RFC 3339, UTC

    @property
    def ok(self) -> bool:
        """True when no file is unsafe."""
        return not any(f.verdict == "unsafe" for f in self.files)

    @property
    def unsafe(self) -> list[FileSafety]:
        return [f for f in self.files if f.verdict == "unsafe"]

    def counts(self) -> dict[str, int]:
        """Number of files per verdict (every verdict present, zero included)."""
        out = dict.fromkeys(VERDICTS, 0)
        for f in self.files:
            out[f.verdict] = out.get(f.verdict, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "scanner": {"name": self.scanner, "version": self.scanner_version},
            "scannedAt": self.scanned_at,
            "files": [f.to_dict() for f in self.files],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SafetyReport:
        try:
            sc = d.get("scanner") or {}
            return cls(
                files=[FileSafety.from_dict(f) for f in d["files"]],
                scanner=str(sc.get("name", SCANNER_NAME)),
                scanner_version=str(sc.get("version", "")),
                scanned_at=str(d.get("scannedAt", "")),
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise InputError(f"malformed safety report: missing or wrong field {e}") from e


# --------------------------------------------------------------------------------------------
# scanning


def scanner_version() -> str:
    """Version of the installed picklescan."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(SCANNER_NAME)
    except PackageNotFoundError:  # pragma: no cover - it is a dependency
        return "unknown"


def _rel(root: Path, p: Path) -> str:
    return p.relative_to(root).as_posix()


def _resolve_files(root: Path, files: list[Path] | None) -> list[Path]:
    if not root.is_dir():
        raise InputError(f"model directory {root} does not exist or is not a directory")
    if files is None:  # the same files `modelseal push` packages
        from modelseal.modelpack import scan_model_dir

        return [root / f.relpath for f in scan_model_dir(root, follow_symlinks=True)]
    rroot = root.resolve()
    out: list[Path] = []
    for p in (p if p.is_absolute() else root / p for p in files):
        try:
            p.resolve().relative_to(rroot)
        except ValueError as e:
            raise UnsafePathError(f"{p} is outside the model directory {root}") from e
        if not p.is_file():
            raise InputError(f"{p} is not a regular file")
        out.append(p)
    return out


def _head(path: Path, n: int = 64) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _from_picklescan(res: Any, member: str | None) -> tuple[list[Finding], bool]:
    found = [
        Finding(f"{g.module}.{g.name}", str(g.safety.value), member)
        for g in res.globals
    ]
    return found, bool(res.scan_err)


def _parses_as_pickle(stream: IO[bytes]) -> bool:
    try:
        for _ in pickletools.genops(stream):
            pass
    except Exception:
        return False
    return True


def _scan_pickle_stream(stream: IO[bytes], file_id: str,
                        member: str | None) -> tuple[list[Finding], bool, bool]:
    """(findings, stopped early, parsed at all)."""
    from picklescan.scanner import scan_pickle_bytes

    res = scan_pickle_bytes(stream, file_id)
    found, err = _from_picklescan(res, member)
    parsed = True
    if not found and not err:
        # picklescan reports "nothing found" both for import-free pickles and for bytes that are
        # no pickle at all: tell them apart.
        stream.seek(0)
        parsed = _parses_as_pickle(stream)
    return found, err, parsed


def _npy_has_objects(descr: Any) -> bool:
    if isinstance(descr, str):
        return descr.lstrip("<>|=").startswith("O")
    if isinstance(descr, list | tuple):
        return any(_npy_has_objects(x) for x in descr)
    return False


def _scan_npy_stream(stream: IO[bytes], file_id: str,
                     member: str | None) -> tuple[list[Finding], bool, str | None]:
    """A .npy array holds a pickle only when its dtype has objects; parse the header ourselves."""
    magic = stream.read(8)
    if not magic.startswith(_NPY_MAGIC) or len(magic) < 8:
        return [], False, "not a valid .npy header"
    major = magic[6]
    if major == 1:
        (hlen,) = struct.unpack("<H", stream.read(2))
    else:
        (hlen,) = struct.unpack("<I", stream.read(4))
    try:
        header = ast.literal_eval(stream.read(hlen).decode("latin1"))
        descr = header["descr"]
    except (ValueError, SyntaxError, KeyError, TypeError):
        return [], False, "not a valid .npy header"
    if not _npy_has_objects(descr):
        return [], False, None
    from picklescan.scanner import scan_pickle_bytes

    found, err = _from_picklescan(scan_pickle_bytes(stream, file_id), member)
    return found, err, "object array (stored as a pickle)"


class _ZlibReader(io.RawIOBase):
    """Streaming zlib decompression (joblib's ``compress=True``) with the file interface."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._d = zlib.decompressobj()
        self._buf = b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        if (offset, whence) != (0, 0):
            raise io.UnsupportedOperation("only rewinding is supported")
        self._raw.seek(0)
        self._d = zlib.decompressobj()
        self._buf = b""
        return 0

    def readinto(self, b: Any) -> int:
        while not self._buf:
            chunk = self._raw.read(1 << 16)
            if not chunk:
                self._buf = self._d.flush()
                break
            self._buf = self._d.decompress(chunk)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def _decompressed(f: IO[bytes], head: bytes) -> tuple[str, IO[bytes]] | None:
    if head.startswith(_GZIP_MAGIC):
        return "gzip", cast(IO[bytes], gzip.GzipFile(fileobj=f))
    if head.startswith(_BZ2_MAGIC):
        return "bz2", cast(IO[bytes], bz2.BZ2File(f))
    if head.startswith(_XZ_MAGIC):
        return "xz", cast(IO[bytes], lzma.LZMAFile(f))
    if head.startswith(_LZMA_MAGIC):
        return "lzma", cast(IO[bytes], lzma.LZMAFile(f, format=lzma.FORMAT_ALONE))
    if head.startswith(_ZLIB_MAGIC):
        return "zlib", cast(IO[bytes], io.BufferedReader(_ZlibReader(f)))
    return None


def _verdict(findings: list[Finding], stopped_early: bool) -> str:
    sev = {f.severity for f in findings}
    if "dangerous" in sev:
        return "unsafe"
    if "suspicious" in sev or stopped_early:
        return "suspicious"
    return "safe"


def _scan_zip(path: Path, rel: str, fmt: str) -> FileSafety:
    from picklescan.relaxed_zipfile import RelaxedZipFile

    findings: list[Finding] = []
    stopped = False
    scanned: list[str] = []
    try:
        with open(path, "rb") as raw, RelaxedZipFile(raw, "r") as zf:
            for name in zf.namelist():
                ext = os.path.splitext(name)[1].lower()
                try:
                    with zf.open(name, "r") as m:
                        magic = m.read(8)
                    if ext in _PICKLE_EXT or magic.startswith(_PICKLE_MAGIC):
                        with zf.open(name, "r") as m:
                            f, err, _ = _scan_pickle_stream(cast(IO[bytes], m), f"{rel}:{name}",
                                                            name)
                        findings += f
                        stopped |= err
                        scanned.append(name)
                        if name.endswith("data.pkl") and fmt == "zip":
                            fmt = "pytorch-zip"
                    elif ext in _NPY_EXT or magic.startswith(_NPY_MAGIC):
                        with zf.open(name, "r") as m:
                            f, err, _ = _scan_npy_stream(cast(IO[bytes], m), f"{rel}:{name}", name)
                        findings += f
                        stopped |= err
                        scanned.append(name)
                except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError):
                    stopped = True
                    findings.append(Finding("<unreadable archive member>", "suspicious", name))
    except (zipfile.BadZipFile, OSError) as e:
        return FileSafety(rel, "", fmt, "unknown", [], f"unreadable zip archive: {e}")
    note = f"scanned members: {', '.join(scanned)}" if scanned else "no pickle members"
    verdict = _verdict(findings, stopped)
    return FileSafety(rel, "", fmt, verdict, _dedup(findings), note)


def _dedup(findings: list[Finding]) -> list[Finding]:
    seen: dict[tuple[str, str, str | None], Finding] = {}
    for f in findings:
        seen.setdefault((f.callable, f.severity, f.member), f)
    order = {"dangerous": 0, "suspicious": 1, "innocuous": 2}
    return sorted(seen.values(),
                  key=lambda f: (order.get(f.severity, 3), f.member or "", f.callable))


def _scan_pickle_file(path: Path, rel: str, fmt: str, legacy_torch: bool) -> FileSafety:
    with open(path, "rb") as f:
        if legacy_torch:
            from picklescan.scanner import scan_pytorch
            from picklescan.torch import InvalidMagicError

            try:
                findings, err = _from_picklescan(scan_pytorch(f, rel), None)
                return FileSafety(rel, "", "pytorch-legacy", _verdict(findings, err),
                                  _dedup(findings))
            except InvalidMagicError:
                f.seek(0)
        findings, err, parsed = _scan_pickle_stream(cast(IO[bytes], f), rel, None)
    if not parsed:
        return FileSafety(rel, "", "unknown", "unknown", [], "not a parseable pickle")
    return FileSafety(rel, "", fmt, _verdict(findings, err), _dedup(findings))


def _check_safetensors(path: Path) -> str | None:
    """None when the header is a valid safetensors header, else why not."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return "too short for a safetensors header"
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 100 * 1024 * 1024):
            return "safetensors header length is out of range"
        try:
            hdr = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return "safetensors header is not JSON"
    if not isinstance(hdr, dict):
        return "safetensors header is not a JSON object"
    return None


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start >= len(head) - 3  # cut inside a multi-byte character
    return True


def _scan_one(path: Path, rel: str) -> FileSafety:
    ext = path.suffix.lower()
    head = _head(path, 4096)
    is_zip = head.startswith(_ZIP_MAGIC) or (ext in _ZIP_EXT | _TORCH_EXT and
                                             zipfile.is_zipfile(path))
    # Content decides first: a pickle renamed .safetensors is still a pickle.
    if is_zip:
        return _scan_zip(path, rel, "npz" if ext == ".npz" else "zip")
    if head.startswith(_NPY_MAGIC):
        with open(path, "rb") as f:
            found, err, note = _scan_npy_stream(f, rel, None)
        if note == "not a valid .npy header":
            return FileSafety(rel, "", "unknown", "unknown", [], note)
        return FileSafety(rel, "", "npy", _verdict(found, err), _dedup(found), note)
    if head.startswith(_PICKLE_MAGIC) or ext in _PICKLE_EXT or ext in _TORCH_EXT:
        if ext in _TORCH_EXT:
            return _scan_pickle_file(path, rel, "pytorch-legacy", legacy_torch=True)
        dec = None if head.startswith(_PICKLE_MAGIC) else _decompressed(io.BytesIO(head), head)
        if dec is not None:
            kind = dec[0]
            with open(path, "rb") as raw:
                dec2 = _decompressed(cast(IO[bytes], raw), head)
                assert dec2 is not None
                try:
                    found, err, parsed = _scan_pickle_stream(dec2[1], rel, None)
                except (OSError, EOFError, zlib.error, lzma.LZMAError) as e:
                    return FileSafety(rel, "", f"pickle+{kind}", "unknown", [],
                                      f"cannot decompress: {e}")
            if not parsed:
                return FileSafety(rel, "", "unknown", "unknown", [], "not a parseable pickle")
            return FileSafety(rel, "", f"pickle+{kind}", _verdict(found, err), _dedup(found))
        fmt = "joblib" if ext == ".joblib" else "pickle"
        return _scan_pickle_file(path, rel, fmt, legacy_torch=False)
    if head.startswith(_7Z_MAGIC):
        return FileSafety(rel, "", "7z-archive", "unknown", [], _OPAQUE_EXT[".7z"][1])
    if ext in _OPAQUE_EXT:
        fmt, why = _OPAQUE_EXT[ext]
        return FileSafety(rel, "", fmt, "unknown", [], why)
    if ext == ".safetensors":
        why_not = _check_safetensors(path)
        if why_not:
            return FileSafety(rel, "", "unknown", "unknown", [], why_not)
        return FileSafety(rel, "", "safetensors", "no-code-format")
    if ext in (".gguf",):
        if not head.startswith(_GGUF_MAGIC):
            return FileSafety(rel, "", "unknown", "unknown", [], "no GGUF magic")
        return FileSafety(rel, "", "gguf", "no-code-format")
    if ext in _NO_CODE_EXT:
        return FileSafety(rel, "", _NO_CODE_EXT[ext], "no-code-format")
    # Unknown name: a protocol 0/1 pickle is plain text, so probe before calling it text.
    with open(path, "rb") as f:
        found, err, parsed = _scan_pickle_stream(cast(IO[bytes], f), rel, None)
    if parsed and found:
        return FileSafety(rel, "", "pickle", _verdict(found, err), _dedup(found))
    if _looks_like_text(head) or path.name.lower() in _TEXT_NAMES:
        return FileSafety(rel, "", "text", "no-code-format")
    return FileSafety(rel, "", "unknown", "unknown", [], "format not recognised")


def scan_model(root: Path, files: list[Path] | None = None) -> SafetyReport:
    """Scan the files of a model directory (all regular files under ``root`` when ``files`` is
    None; relative entries of ``files`` are taken relative to ``root``). Nothing is loaded."""
    root = Path(root)
    paths = _resolve_files(root, files)
    digests = hash_files(paths)
    results: list[FileSafety] = []
    for p, d in zip(paths, digests, strict=True):
        rel = _rel(root, p) if p.is_relative_to(root) else _rel(root.resolve(), p.resolve())
        try:
            fs = _scan_one(p, rel)
        except OSError as e:
            raise InputError(f"cannot read {p}: {e.strerror or e}") from e
        fs.sha256 = d.sha256
        results.append(fs)
    results.sort(key=lambda r: r.path)
    now = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return SafetyReport(results, SCANNER_NAME, scanner_version(), now)


# --------------------------------------------------------------------------------------------
# predicate


def safety_predicate(report: SafetyReport) -> dict[str, Any]:
    """The model-safety predicate (predicateType :data:`SAFETY_PREDICATE`) for ``report``."""
    counts = report.counts()
    return {
        "scanner": {
            "name": report.scanner,
            "version": report.scanner_version,
            "uri": f"pkg:pypi/{report.scanner}@{report.scanner_version}",
        },
        "scannedAt": report.scanned_at,
        "result": "PASSED" if report.ok else "FAILED",
        "summary": {
            "files": len(report.files),
            "safe": counts["safe"],
            "unsafe": counts["unsafe"],
            "suspicious": counts["suspicious"],
            "noCodeFormat": counts["no-code-format"],
            "unknown": counts["unknown"],
        },
        "files": [f.to_dict() for f in report.files],
    }


def safety_subjects(report: SafetyReport) -> list[dict[str, Any]]:
    """in-toto subjects (name = relative path, sha256 digest) of the files in ``report``."""
    return [{"name": f.path, "digest": {"sha256": f.sha256}} for f in report.files]


def report_from_predicate(predicate: dict[str, Any]) -> SafetyReport:
    """Read a model-safety predicate back into a :class:`SafetyReport`."""
    return SafetyReport.from_dict(predicate)


def _iter_unsafe(predicate: dict[str, Any], verdicts: set[str]) -> Iterator[str]:
    files = predicate.get("files")
    if not isinstance(files, list):
        yield "model-safety predicate is malformed: no 'files' list"
        return
    for i, f in enumerate(files):
        if not isinstance(f, dict) or not isinstance(f.get("path"), str):
            yield f"model-safety predicate is malformed: file entry {i} has no path"
            continue
        verdict = f.get("verdict")
        if verdict not in VERDICTS:
            yield f"{f['path']} has an unknown verdict {verdict!r}"
            continue
        if verdict not in verdicts:
            continue
        hits = [x for x in f.get("findings") or [] if isinstance(x, dict)
                and x.get("severity") in ("dangerous", "suspicious")]
        if verdict == "unsafe":
            hits = [x for x in hits if x.get("severity") == "dangerous"] or hits
        if not hits:
            yield f"{f['path']} is {verdict}" + (f": {f['note']}" if f.get("note") else "")
        for x in hits:
            where = f"{f['path']} ({x['member']})" if x.get("member") else f["path"]
            yield f"{where} imports {x.get('callable')} ({verdict})"


def unsafe_findings(predicate: dict[str, Any], *, include_suspicious: bool = False) -> list[str]:
    """Messages for every unsafe file of a model-safety predicate, e.g.
    ``"model/evil.pkl imports os.system (unsafe)"``. Empty means nothing unsafe.

    Fails closed: a malformed predicate yields a message rather than an empty list.
    """
    verdicts = {"unsafe", "suspicious"} if include_suspicious else {"unsafe"}
    return list(_iter_unsafe(predicate, verdicts))
