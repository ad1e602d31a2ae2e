"""A corpus of model files built with the real writers (numpy, joblib, pickle) or, for PyTorch's
zip and legacy formats, by hand in their documented layout, in a temporary directory.

Every code-executing entry carries a payload that, when really loaded, runs
``touch <marker>``: :func:`run_loaders` loads each entry with the real loader in a subprocess
and reports which markers appeared, so a corpus file counts as code-executing only when a real
loader ran it. Nothing here unpickles in the test process itself.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path


class Payload:
    """Pickles to ``os.system("touch MARKER")``: a harmless trace that loading ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@dataclass
class Entry:
    """One corpus file. ``loader`` names how a real program loads it (see ``_LOADERS``);
    ``expect`` is the verdict the scanner must give."""

    name: str
    expect: str
    loader: str | None = None  # None: no real loader executes it (data, or scanner-only)
    marker: Path | None = None


_LOADERS = {
    "pickle": "import pickle; pickle.load(open(P, 'rb'))",
    "numpy": "import numpy as np; r = np.load(P, allow_pickle=True); "
             "[r[k] for k in r.files] if hasattr(r, 'files') else r",
    "joblib": "import joblib; joblib.load(P)",
    "torch": "import torch; torch.load(P, weights_only=False)",
}


def _npy_bytes(descr: object, payload: bytes, version: int = 1) -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": (1,)}).encode("latin-1")
    hl = 2 if version == 1 else 4
    pad = 64 - (6 + 2 + hl + len(header) + 1) % 64
    header += b" " * pad + b"\n"
    return (b"\x93NUMPY" + bytes([version, 0]) + len(header).to_bytes(hl, "little") + header
            + payload)


def _torch_zip(data_pkl: bytes, prefix: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
        z.writestr("archive/data/0", b"\x00" * 16)
    return prefix + buf.getvalue()


def _torch_legacy(main: bytes) -> bytes:
    """torch.save's legacy (non-zip) layout: magic, protocol, sys_info, the object, the
    storage keys, each a pickle, then raw storages (none here)."""
    magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    proto = pickle.dumps(1001, protocol=2)
    sys_info = pickle.dumps({"protocol_version": 1001, "little_endian": True,
                             "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2)
    keys = pickle.dumps([], protocol=2)
    return magic + proto + sys_info + main + keys


def _torch_legacy_tar(storages: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in (("sys_info", pickle.dumps({"little_endian": True})),
                           ("storages", storages), ("tensors", pickle.dumps(0)),
                           ("pickle", pickle.dumps({}))):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _v7_tar(data: bytes) -> bytes:
    """The same tar with every header made old-style (no ``ustar`` magic, checksum redone):
    ``tarfile``, and so torch.load's legacy tar path, still reads it."""
    out = bytearray(data)
    off = 0
    while off + 512 <= len(out) and out[off:off + 512] != b"\0" * 512:
        h = out[off:off + 512]
        size = int(h[124:136].rstrip(b"\0 ") or b"0", 8)
        h[257:265] = b"\0" * 8
        h[148:156] = b" " * 8
        h[148:156] = b"%06o\0 " % sum(h)
        out[off:off + 512] = h
        off += 512 + (size + 511) // 512 * 512
    return bytes(out)


def _safetensors() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\x00" * 8


def build(root: Path) -> list[Entry]:
    """Write the corpus into ``root`` and return its entries."""
    import joblib
    import numpy as np

    root.mkdir(parents=True, exist_ok=True)
    marks = root / "markers"
    marks.mkdir(exist_ok=True)
    entries: list[Entry] = []

    def evil(name: str, data: bytes, loader: str | None, expect: str = "unsafe") -> None:
        (root / name).write_bytes(data)
        entries.append(Entry(name, expect, loader, marks / name if loader else None))

    def payload(name: str) -> Payload:
        return Payload(marks / name)

    def safe(name: str, data: bytes, expect: str) -> None:
        (root / name).write_bytes(data)
        entries.append(Entry(name, expect))

    # every pickle protocol, 0 and 1 included (text pickles with no PROTO opcode)
    for proto in range(6):
        n = f"proto{proto}.bin"
        evil(n, pickle.dumps({"w": [1.0], "x": payload(n)}, protocol=proto), "pickle")

    # numpy: np.save of an object array, then hand-written headers in every dtype spelling
    n = "np_save_object.npy"
    np.save(root / n, np.array([payload(n), 1], dtype=object), allow_pickle=True)
    entries.append(Entry(n, "unsafe", "numpy", marks / n))
    for i, descr in enumerate(["|O", "O", "object", "O8", "<O", [("a", "<i4"), ("b", "|O")],
                               ("|O", (2,)), [("a", ("O", (2,)))], [(("t", "a"), "O")]]):
        n = f"npy_descr{i}.npy"
        evil(n, _npy_bytes(descr, pickle.dumps(payload(n), protocol=3)), "numpy")
    n = "npy_v3.npy"
    evil(n, _npy_bytes("object", pickle.dumps(payload(n)), version=3), "numpy")
    n = "npy_v2.npy"
    evil(n, _npy_bytes("|O", pickle.dumps(payload(n)), version=2), "numpy")
    n = "arrays.npz"
    with zipfile.ZipFile(root / n, "w") as z:
        z.writestr("x.npy", _npy_bytes("|O", pickle.dumps(payload(n))))
        z.writestr("y.npy", _npy_bytes("<f4", b"\x00" * 4))
    entries.append(Entry(n, "unsafe", "numpy", marks / n))
    n = "savez_compressed.npz"
    np.savez_compressed(root / n, a=np.zeros(3), o=np.array([payload(n)], dtype=object))
    entries.append(Entry(n, "unsafe", "numpy", marks / n))
    # a pickle named .npy: np.load falls back to pickle.load
    n = "pickle_named.npy"
    evil(n, pickle.dumps(payload(n)), "numpy")

    # joblib, raw and every compressor it writes; numeric arrays before and after the payload,
    # and an object array holding it
    for comp in (0, 3, ("zlib", 3), ("gzip", 3), ("bz2", 3), ("xz", 3), ("lzma", 3),
                 ("lz4", 3)):
        tag = comp if isinstance(comp, int) else comp[0]
        n = f"joblib_{tag}.joblib"
        obj = {"coef": np.arange(50, dtype="f8"), "m": np.ones((3, 4), dtype="<i4"),
               "rec": np.zeros(2, dtype=[("x", "<f4"), ("y", "<i2")]),
               "hook": payload(n), "tail": np.arange(7, dtype="u1")}
        joblib.dump(obj, root / n, compress=comp)
        entries.append(Entry(n, "unsafe", "joblib", marks / n))
    n = "joblib_objarray.pkl"
    joblib.dump({"a": np.arange(5.0), "o": np.array([1, payload(n)], dtype=object)}, root / n)
    entries.append(Entry(n, "unsafe", "joblib", marks / n))

    # compressed pickles with double extensions (joblib.load detects each by its magic)
    for ext, fn in ((".pkl.gz", gzip.compress), (".pkl.bz2", bz2.compress),
                    (".pkl.xz", lzma.compress), (".pkl.z", zlib.compress),
                    (".pkl.lzma", lambda b: lzma.compress(b, format=lzma.FORMAT_ALONE))):
        n = "model" + ext
        evil(n, fn(pickle.dumps(payload(n), protocol=4)), "joblib")

    # extensions that lie: the bytes are a pickle
    for n in ("model.safetensors", "config.json", "weights.gguf", "README.md"):
        evil(n, pickle.dumps(payload(n), protocol=2), "pickle")

    # PyTorch: zip format, legacy format (5 pickles), legacy tar
    n = "torch_zip.pt"
    evil(n, _torch_zip(pickle.dumps({"w": payload(n)}, protocol=2)), "torch")
    n = "torch_legacy.pt"
    evil(n, _torch_legacy(pickle.dumps({"w": payload(n)}, protocol=2)), "torch")
    n = "torch_legacy_tar.pt"
    evil(n, _torch_legacy_tar(pickle.dumps(payload(n), protocol=2)), "torch")
    n = "torch_legacy_tar_v7.pt"
    evil(n, _v7_tar(_torch_legacy_tar(pickle.dumps(payload(n), protocol=2))), "torch")
    # both a pickle and a zip: torch.load and pickle.load take the pickle
    n = "polyglot.pt"
    evil(n, _torch_zip(pickle.dumps({"ok": 1}), prefix=pickle.dumps(payload(n), protocol=2)),
         "torch")
    # more than one pickle: a benign one first, the payload second
    n = "two_pickles.pkl"
    evil(n, pickle.dumps({"ok": 1}) + pickle.dumps(payload(n)), None)

    # nested compression and a zip inside gzip (no stock loader unwraps these: scanner-only)
    n = "nested.pkl.gz.bz2"
    evil(n, bz2.compress(gzip.compress(pickle.dumps(payload(n)))), None)
    n = "zip_in_gzip.gz"
    evil(n, gzip.compress(_torch_zip(pickle.dumps(payload(n)))), None)

    # data formats and safe code formats
    safe("model.safetensors.ok", _safetensors(), "no-code-format")
    safe("weights.gguf.ok", b"GGUF" + struct.pack("<I", 3) + b"\x00" * 24, "no-code-format")
    safe("empty.pt", b"", "no-code-format")
    safe("benign.pkl", pickle.dumps({"layers": [1, 2, 3], "names": ["a"]}, protocol=4), "safe")
    safe("numeric.npy", _npy_bytes("<f4", b"\x00" * 4), "no-code-format")
    np.save(root / "np_save_numeric.npy", np.arange(10, dtype="f8"))
    entries.append(Entry("np_save_numeric.npy", "no-code-format"))
    joblib.dump({"a": np.arange(100.0)}, root / "numeric.joblib", compress=3)
    entries.append(Entry("numeric.joblib", "safe"))
    safe("benign_torch.pt", _torch_zip(pickle.dumps({"w": [1.0]}, protocol=2)), "safe")
    # ONNX-shaped protobuf: ir_version (field 1), graph (field 7)
    safe("model.onnx", b"\x08\x07" + b"\x3a\x02\x0a\x00", "no-code-format")
    safe("notes.txt", b"plain text\n", "no-code-format")
    return entries


def limit_memory() -> None:
    """preexec_fn for loader subprocesses: a mutated file can make a loader allocate without
    bound (numpy.empty of a huge shape); 3 GiB of data is plenty for the corpus."""
    import resource

    resource.setrlimit(resource.RLIMIT_DATA, (3 << 30, 3 << 30))


def run_loaders(entries: list[Entry], root: Path, python: str = sys.executable) -> set[str]:
    """Load every entry that has a loader with that real loader (one subprocess per loader,
    each file in its own try block); return the names whose payload ran (marker appeared)."""
    ran: set[str] = set()
    by_loader: dict[str, list[Entry]] = {}
    for e in entries:
        if e.loader is not None and e.marker is not None:
            by_loader.setdefault(e.loader, []).append(e)
    for loader, group in by_loader.items():
        lines = []
        for e in group:
            lines += [f"P = {str(root / e.name)!r}", "try:", f"    {_LOADERS[loader]}",
                      "except Exception:", "    pass"]
        subprocess.run([python, "-c", "\n".join(lines)], cwd=root, capture_output=True,
                       timeout=300, check=False, preexec_fn=limit_memory)
        ran |= {e.name for e in group if e.marker is not None and e.marker.exists()}
    return ran
