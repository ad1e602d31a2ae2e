"""Model safety: which files of a model could run code when loaded, and what they would import.

Nothing is loaded. Every file is read by content (its name only ever makes a verdict
stricter), in every way a loader could read it, and the readings are merged: as pickles from
the first byte to the end of the file (pickle.load, joblib.load, numpy.load, legacy
torch.load), following joblib's raw array bytes between pickles; as a numpy ``.npy`` whose
dtype, in any spelling, may hold objects; through gzip/bz2/xz/lzma/zlib/lz4 and joblib zfile
wrappers; as a zip (PyTorch zip checkpoints, ``.npz``, a zip appended to a pickle) or tar
(PyTorch legacy tar) whose members are read the same way; as a data format (safetensors,
GGUF, ONNX/protobuf, text ...). Work is bounded (:class:`ScanLimits`); past a bound, or where
code-executing content could not be read to the end, the verdict is ``unknown`` with
``codeExecuting`` set, which ``model_safety: true`` refuses. picklescan rates the imports
found (innocuous, suspicious, dangerous).

The result is a :class:`SafetyReport`; :func:`safety_predicate` turns it into the predicate of a
signed in-toto Statement and :func:`unsafe_findings` is the pure check the verifier runs on it.
"""

from __future__ import annotations

import ast
import bz2
import contextlib
import datetime as _dt
import gzip
import io
import json
import logging
import lzma
import os
import pickletools
import re
import struct
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, cast

from modelseal._util.time import rfc3339
from modelseal.digest import hash_files
from modelseal.errors import InputError, UnsafePathError

"""predicateType of the model-safety attestation (in-toto Statement v1)."""

SCANNER_NAME = "picklescan"
ENGINE = "modelseal-content-scan/2"
"""The reader that walks the bytes (modelseal's own); picklescan rates the imports it finds.
Predicates from before it (no ``scanner.engine``) came from a scanner that missed payloads."""

Verdict = Literal["safe", "unsafe", "suspicious", "no-code-format", "unknown"]
Severity = Literal["innocuous", "suspicious", "dangerous"]
VERDICTS: tuple[str, ...] = ("safe", "unsafe", "suspicious", "no-code-format", "unknown")
SEVERITIES: tuple[str, ...] = ("innocuous", "suspicious", "dangerous")

# Formats whose loaders run code (pickle and what wraps one). A file in one of these formats
# that could not be read to the end is "unknown" with codeExecuting true, which
# `model_safety: true` refuses: it cannot be proved safe. Used for predicates written before
# the codeExecuting field existed.
CODE_FORMATS = ("pickle", "joblib", "pytorch-zip", "pytorch-legacy", "pytorch-legacy-tar",
                "npy", "npz", "object-array", "zip", "tar")

# picklescan logs every finding as a warning; the report carries them, so keep them off stderr.
logging.getLogger("picklescan").addHandler(logging.NullHandler())
logging.getLogger("picklescan").propagate = False


@dataclass(frozen=True)
class PickleGlobal:
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
    def from_dict(cls, d: dict[str, Any]) -> PickleGlobal:
        return cls(callable=str(d["callable"]), severity=str(d["severity"]),
                   member=None if d.get("member") is None else str(d["member"]))


@dataclass
class FileSafety:
    """The verdict on one file. ``path`` is relative to the model root and ``/``-separated."""

    path: str
    sha256: str  # hex
    format: str
    verdict: str
    findings: list[PickleGlobal] = field(default_factory=list)
    note: str | None = None
    code_executing: bool = False  # a loader runs code from this file (pickle, object array...)

    @property
    def unproven_code(self) -> bool:
        """Code-executing content the scanner could not prove safe (not read to the end)."""
        return self.code_executing and self.verdict == "unknown"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "path": self.path,
            "digest": {"sha256": self.sha256},
            "format": self.format,
            "verdict": self.verdict,
            "codeExecuting": self.code_executing,
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
            findings=[PickleGlobal.from_dict(f) for f in d.get("findings", [])],
            note=None if d.get("note") is None else str(d["note"]),
            code_executing=_code_executing(d),
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
        """True when no file is unsafe and every code-executing file was proved safe (or
        suspicious: read to the end, importing only names neither list knows)."""
        return not any(f.verdict == "unsafe" or f.unproven_code for f in self.files)

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
# scanning: every file is read by content, in every way a loader could read it


@dataclass(frozen=True)
class ScanLimits:
    """Bounds on the work spent on one file; past a bound the verdict is ``unknown``, never
    ``safe``. ``max_expanded_bytes`` counts bytes produced by decompression and by archive
    members (a decompression bomb stops there); ``max_depth`` counts nested containers
    (zip in gzip in ...)."""

    max_expanded_bytes: int = 2 << 30
    max_depth: int = 4
    max_members: int = 100_000
    max_pickles: int = 100_000
    max_line: int = 1 << 20  # protocol 0 text arguments longer than this are not read


DEFAULT_LIMITS = ScanLimits()


class _LimitExceeded(Exception):
    """A bound of :class:`ScanLimits` was reached."""


class _Budget:
    """Bytes of expanded content one file may still produce (shared by all its layers)."""

    def __init__(self, limits: ScanLimits) -> None:
        self.limits = limits
        self.left = limits.max_expanded_bytes

    def spend(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise _LimitExceeded(f"more than {self.limits.max_expanded_bytes} bytes of "
                                 "decompressed or archived content")


class _BadStream(Exception):
    """The content cannot be read on (a broken compressed stream, an encrypted member)."""


class _In:
    """A sequential reader that knows its offset, bounds lines, and (for expanded content)
    charges what it reads to the budget. Pickle argument readers of ``pickletools`` use it."""

    def __init__(self, raw: IO[bytes], budget: _Budget | None, max_line: int) -> None:
        self._raw = raw
        self._budget = budget
        self._max_line = max_line
        self._pending = b""
        self.pos = 0

    def __enter__(self) -> _In:
        return self

    def __exit__(self, *exc: object) -> None:
        self._raw.close()

    def _take(self, data: bytes) -> bytes:
        self.pos += len(data)
        if self._budget is not None:
            self._budget.spend(len(data))
        return data

    def _raw_call(self, fn: Callable[[int], bytes], n: int) -> bytes:
        try:
            return fn(n)
        except (OSError, EOFError, zlib.error, lzma.LZMAError, RuntimeError,
                NotImplementedError, struct.error) as e:
            raise _BadStream(f"{type(e).__name__}: {e}") from e

    def read(self, n: int) -> bytes:
        if n <= 0:
            return b""
        head, self._pending = self._pending[:n], self._pending[n:]
        rest = self._raw_call(self._raw.read, n - len(head)) if n > len(head) else b""
        return self._take(head + rest)

    def readline(self, limit: int = -1) -> bytes:
        if self._pending:
            first = self.read(1)
            if first == b"\n":
                return first
            return first + self.readline()
        return self._take(self._raw_call(self._raw.readline, self._max_line))

    def skip(self, n: int) -> bool:
        """Skip ``n`` bytes; False when the content ends first."""
        while n > 0:
            chunk = self.read(min(n, 1 << 20))
            if not chunk:
                return False
            n -= len(chunk)
        return True

    def at_eof(self) -> bool:
        if not self._pending:
            self._pending = self._raw_call(self._raw.read, 1)
        return not self._pending


@dataclass
class _Node:
    """What was learnt about one piece of content."""

    formats: list[str] = field(default_factory=list)
    globals: list[tuple[str, str, str | None]] = field(default_factory=list)  # module, name, member
    code: bool = False       # a loader runs code from it (pickle, object array, ...)
    problems: list[str] = field(default_factory=list)  # why code content was not fully read
    opaque: str | None = None  # a format that can carry code modelseal does not analyse
    data: bool = False       # a format recognised as data only
    notes: list[str] = field(default_factory=list)

    def merge(self, other: _Node, member: str | None) -> None:
        self.globals += [(m, n, mem if mem is not None else member)
                         for m, n, mem in other.globals]
        self.code |= other.code
        where = f"{member}: " if member else ""
        self.problems += [where + p for p in other.problems]
        if other.opaque and not self.opaque:
            self.opaque = where + other.opaque


# --- pickle ------------------------------------------------------------------------------------

_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_MARK = object()


class _Unknown:
    """A value the symbolic machine does not model."""


_UNKNOWN = _Unknown()


@dataclass
class _Global:
    module: str
    name: str


@dataclass
class _Obj:
    """The result of calling or instantiating ``func`` (REDUCE, NEWOBJ, OBJ, INST)."""

    func: Any
    args: Any
    state: Any = None


_STR_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE",
            "SHORT_BINUNICODE", "BINUNICODE8"}
_MEMO_PUT = {"PUT", "BINPUT", "LONG_BINPUT"}
_MEMO_GET = {"GET", "BINGET", "LONG_BINGET"}
_LENGTH_PREFIX = {pickletools.TAKEN_FROM_ARGUMENT1: 1, pickletools.TAKEN_FROM_ARGUMENT4: 4,
                  pickletools.TAKEN_FROM_ARGUMENT4U: 4, pickletools.TAKEN_FROM_ARGUMENT8U: 8}
_CODE2OP: dict[str, pickletools.OpcodeInfo] = {op.code: op for op in pickletools.opcodes}
_MAX_VALUE_ARG = 1 << 16  # longer string/bytes arguments are skipped, not held


class _PickleError(Exception):
    """The bytes stop being a pickle here (a loader would fail at this point)."""


def _read_arg(f: _In, op: pickletools.OpcodeInfo) -> Any:
    arg = op.arg
    if arg is None:
        return None
    if op.name in ("GLOBAL", "INST"):
        # as pickle reads them: two raw lines decoded as UTF-8 (pickletools would also undo
        # backslash escapes, which pickle does not)
        parts = []
        for _ in range(2):
            line = f.readline()
            if not line.endswith(b"\n"):
                raise _PickleError(f"{op.name} argument without a newline")
            try:
                parts.append(line[:-1].decode("utf-8"))
            except UnicodeDecodeError as e:
                raise _PickleError(f"{op.name} argument is not UTF-8") from e
        return f"{parts[0]} {parts[1]}"
    if arg.n in _LENGTH_PREFIX:
        k = _LENGTH_PREFIX[arg.n]
        raw = f.read(k)
        if len(raw) < k:
            raise _PickleError(f"truncated {op.name}")
        n = int.from_bytes(raw, "little", signed=(arg.n == pickletools.TAKEN_FROM_ARGUMENT4))
        if n < 0:
            raise _PickleError(f"negative length in {op.name}")
        if n > _MAX_VALUE_ARG:
            if not f.skip(n):
                raise _PickleError(f"truncated {op.name}")
            return _UNKNOWN
        data = f.read(n)
        if len(data) < n:
            raise _PickleError(f"truncated {op.name}")
        if op.name in ("LONG1", "LONG4"):
            return int.from_bytes(data, "little", signed=True)
        if op.name in ("BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"):
            try:
                return data.decode("utf-8", "surrogatepass")
            except UnicodeDecodeError as e:
                raise _PickleError(f"{op.name} is not UTF-8") from e
        if op.name in ("BINSTRING", "SHORT_BINSTRING"):
            return data.decode("latin-1")
        return data
    try:
        if arg.n == pickletools.UP_TO_NEWLINE:  # these readers warn on odd escapes
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return arg.reader(cast(IO[bytes], f))
        return arg.reader(cast(IO[bytes], f))
    except (ValueError, UnicodeDecodeError) as e:
        raise _PickleError(f"bad argument of {op.name}: {e}") from e


def _pop_mark(stack: list[Any]) -> list[Any]:
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] is _MARK:
            items = stack[i + 1:]
            del stack[i:]
            return items
    raise _PickleError("no MARK on the stack")


class _PickleMachine:
    """Reads pickle opcodes the way ``pickle.Unpickler`` does, without importing or calling
    anything: globals are recorded, calls become :class:`_Obj`, and the few loaders that read
    raw bytes between opcodes (joblib's numpy arrays) are followed."""

    def __init__(self, f: _In, node: _Node, member: str | None) -> None:
        self.f = f
        self.node = node
        self.member = member

    def _global(self, module: Any, name: Any) -> _Global:
        if isinstance(module, str) and isinstance(name, str) and (
                not module or "\x00" in module or "\x00" in name):
            # __import__ refuses these: the loader fails here, nothing is imported
            raise _PickleError("an import name no loader can import")
        if not (isinstance(module, str) and isinstance(name, str)):
            self.node.globals.append(("<computed>", "<computed>", self.member))
            return _Global("<computed>", "<computed>")
        self.node.globals.append((module, name, self.member))
        return _Global(module, name)

    def load_one(self) -> Any:
        """Read one pickle up to its STOP; return the value left on the stack."""
        f = self.f
        stack: list[Any] = []
        memo: dict[int, Any] = {}
        frame_end = -1
        pop = self._pop
        while True:
            code = f.read(1)
            if not code:
                raise _PickleError("pickle ends without STOP")
            try:
                op = _CODE2OP[code.decode("latin-1")]
            except KeyError:
                raise _PickleError(f"invalid opcode {code!r} at offset {f.pos - 1}") from None
            arg = _read_arg(f, op)
            name = op.name
            if name == "STOP":
                return pop(stack)
            if name in ("PROTO",):
                continue
            if name == "FRAME":
                frame_end = f.pos + int(arg)
                continue
            if name == "MARK":
                stack.append(_MARK)
            elif name == "POP":
                if stack:
                    stack.pop()
                else:
                    raise _PickleError("POP on an empty stack")
            elif name == "POP_MARK":
                _pop_mark(stack)
            elif name == "DUP":
                top = pop(stack)
                stack += [top, top]
            elif name in _STR_OPS or name in ("INT", "BININT", "BININT1", "BININT2", "LONG",
                                               "LONG1", "LONG4", "FLOAT", "BINFLOAT"):
                stack.append(arg)
            elif name == "NONE":
                stack.append(None)
            elif name in ("NEWTRUE", "NEWFALSE"):
                stack.append(name == "NEWTRUE")
            elif name == "EMPTY_TUPLE":
                stack.append(())
            elif name == "EMPTY_LIST":
                stack.append([])
            elif name == "EMPTY_DICT":
                stack.append({})
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                items = [pop(stack) for _ in range(n)][::-1]
                stack.append(tuple(items))
            elif name == "TUPLE":
                stack.append(tuple(_pop_mark(stack)))
            elif name == "LIST":
                stack.append(list(_pop_mark(stack)))
            elif name == "DICT":
                items = _pop_mark(stack)
                stack.append(_to_dict(items))
            elif name in ("APPEND", "APPENDS"):
                items = [pop(stack)] if name == "APPEND" else _pop_mark(stack)
                target = stack[-1] if stack else pop(stack)
                if isinstance(target, list):
                    target.extend(items)
            elif name in ("SETITEM", "SETITEMS"):
                items = [pop(stack) for _ in range(2)][::-1] if name == "SETITEM" \
                    else _pop_mark(stack)
                target = stack[-1] if stack else pop(stack)
                if isinstance(target, dict):
                    target.update(_to_dict(items))
            elif name == "ADDITEMS":
                _pop_mark(stack)
                if not stack:
                    raise _PickleError("ADDITEMS on an empty stack")
            elif name == "FROZENSET":
                _pop_mark(stack)
                stack.append(_UNKNOWN)
            elif name in _MEMO_PUT or name == "MEMOIZE":
                if not stack:
                    raise _PickleError(f"{name} on an empty stack")
                memo[len(memo) if name == "MEMOIZE" else int(arg)] = stack[-1]
            elif name in _MEMO_GET:
                if int(arg) not in memo:
                    raise _PickleError(f"memo key {arg} not found")
                stack.append(memo[int(arg)])
            elif name == "GLOBAL":
                module, _, gname = str(arg).partition(" ")
                stack.append(self._global(module, gname))
            elif name == "STACK_GLOBAL":
                gname = pop(stack)
                module = pop(stack)
                stack.append(self._global(module, gname))
            elif name == "INST":
                module, _, gname = str(arg).partition(" ")
                args = _pop_mark(stack)
                stack.append(_Obj(self._global(module, gname), tuple(args)))
            elif name == "OBJ":
                items = _pop_mark(stack)
                if not items:
                    raise _PickleError("OBJ without a class")
                stack.append(_Obj(items[0], tuple(items[1:])))
            elif name in ("REDUCE", "NEWOBJ"):
                args = pop(stack)
                func = pop(stack)
                stack.append(_Obj(func, args))
            elif name == "NEWOBJ_EX":
                pop(stack)
                args = pop(stack)
                func = pop(stack)
                stack.append(_Obj(func, args))
            elif name == "BUILD":
                state = pop(stack)
                if not stack:
                    raise _PickleError("BUILD on an empty stack")
                obj = stack[-1]
                if isinstance(obj, _Obj):
                    obj.state = state
                    if _is_joblib_wrapper(obj.func):
                        self._joblib_array(state, frame_end)
            elif name in ("EXT1", "EXT2", "EXT4"):
                # copyreg's extension registry maps a code to a global registered at run time
                self.node.globals.append(("copyreg.extension", str(arg), self.member))
                stack.append(_UNKNOWN)
            else:  # generic: PERSID, BINPERSID, BINBYTES*, BYTEARRAY8, buffers ...
                for _ in op.stack_before:
                    pop(stack)
                stack.extend(_UNKNOWN for _ in op.stack_after)

    @staticmethod
    def _pop(stack: list[Any]) -> Any:
        if not stack or stack[-1] is _MARK:
            raise _PickleError("stack underflow")
        return stack.pop()

    def _joblib_array(self, state: Any, frame_end: int) -> None:
        """joblib writes a numpy array's bytes (or, for object arrays, a nested pickle) right
        after the wrapper's BUILD opcode: follow what ``NumpyArrayWrapper.read_array`` reads."""
        if frame_end > self.f.pos:
            raise _PickleError("joblib array data inside a pickle frame (joblib never writes "
                               "that; a loader and this scanner would read it differently)")
        if not isinstance(state, dict):
            raise _PickleError("joblib array wrapper without a state dict")
        hasobject, itemsize = _dtype_info(state.get("dtype"))
        if hasobject is True or hasobject is None:
            # object arrays are a nested pickle; an unreadable dtype is scanned as one too and
            # must parse as one, or the file is not understood
            self.node.code = True
            self.load_one()
            return
        shape = state.get("shape")
        if not (isinstance(shape, tuple) and all(isinstance(x, int) and x >= 0 for x in shape)
                and itemsize is not None):
            raise _PickleError("joblib array with an unreadable shape or dtype")
        count = 1
        for x in shape:
            count *= x
        if state.get("numpy_array_alignment_bytes") is not None:
            pad = self.f.read(1)
            if not pad or not self.f.skip(pad[0]):
                raise _PickleError("truncated joblib array padding")
        if not self.f.skip(count * itemsize):
            raise _PickleError("truncated joblib array data")


def _to_dict(items: list[Any]) -> dict[Any, Any]:
    if len(items) % 2:
        raise _PickleError("odd number of items for a dict")
    out: dict[Any, Any] = {}
    for k, v in zip(items[::2], items[1::2], strict=True):
        with contextlib.suppress(TypeError):  # an unhashable symbolic key: not modelled
            out[k] = v
    return out


def _is_joblib_wrapper(func: Any) -> bool:
    return (isinstance(func, _Global) and func.name == "NumpyArrayWrapper"
            and func.module.startswith("joblib"))


# numpy type strings that hold no Python objects, with their item size (None: from the digits)
_NONOBJ_TYPESTR = re.compile(
    r"^[<>|=]?(?:(?P<one>[?bBhHiIlLqQnNpPefdgFDG])|(?P<kind>[biufcSUVa])(?P<size>\d+)"
    r"|(?P<time>[mM]8)(?:\[\d*[a-zA-Z]+\])?)$")
_ONE_SIZE = {"?": 1, "b": 1, "B": 1, "h": 2, "H": 2, "i": 4, "I": 4, "l": 8, "L": 8, "q": 8,
             "Q": 8, "n": 8, "N": 8, "p": 8, "P": 8, "e": 2, "f": 4, "d": 8, "g": 16, "F": 8,
             "D": 16, "G": 32}
_NAMED_NONOBJ = {
    **{f"{k}{b}": b // 8 for k in ("int", "uint") for b in (8, 16, 32, 64)},
    **{f"float{b}": b // 8 for b in (16, 32, 64)},
    "complex64": 8, "complex128": 16, "bool": 1, "float": 8, "int": 8, "complex": 16,
    "double": 8, "single": 4, "half": 2, "byte": 1, "ubyte": 1, "short": 2, "ushort": 2,
    "intc": 4, "uintc": 4, "longlong": 8, "ulonglong": 8, "bool_": 1,
}


def _typestr_info(s: str) -> tuple[bool | None, int | None]:
    """(has objects, item size) of a numpy type string; None where it cannot be told.
    Only spellings known to hold no objects say False: anything else may be an object."""
    s = s.strip()
    if s.lstrip("<>|=").lower().startswith("o"):  # O, O8, object, object_: Python objects
        return True, 8
    if s in _NAMED_NONOBJ:
        return False, _NAMED_NONOBJ[s]
    m = _NONOBJ_TYPESTR.match(s)
    if not m:
        return None, None
    if m.group("one"):
        return False, _ONE_SIZE[m.group("one")]
    if m.group("time"):
        return False, 8
    size = int(m.group("size"))
    if m.group("kind") == "U":
        size *= 4
    elif m.group("kind") == "c":
        size = size if size > 1 else 1
    return False, size


def _merge_obj(a: bool | None, b: bool | None) -> bool | None:
    if a is True or b is True:
        return True
    if a is None or b is None:
        return None
    return False


def _dtype_info(d: Any, depth: int = 0) -> tuple[bool | None, int | None]:
    """(has objects, item size) of a pickled ``numpy.dtype`` (an :class:`_Obj`)."""
    if depth > 32 or not (isinstance(d, _Obj) and isinstance(d.func, _Global)
                          and d.func.module.split(".")[0] == "numpy" and d.func.name == "dtype"
                          and isinstance(d.args, tuple) and d.args
                          and isinstance(d.args[0], str)):
        return None, None
    hasobj, size = _typestr_info(d.args[0])
    st = d.state
    if isinstance(st, tuple) and len(st) >= 8:
        sub, fields, elsize, flags = st[2], st[4], st[5], st[7]
        if isinstance(flags, int) and flags & 0x01:  # NPY_ITEM_REFCOUNT: holds objects
            hasobj = True
        if isinstance(elsize, int) and elsize > 0 and elsize != size:
            # numpy takes the size from the type string for fixed types and requires the two
            # to agree for flexible ones: a mismatch is a file joblib and modelseal could
            # read differently, so the array's length is not trusted
            size = None
        if sub is not None:
            if isinstance(sub, tuple) and len(sub) == 2:
                hasobj = _merge_obj(hasobj, _dtype_info(sub[0], depth + 1)[0])
            else:
                hasobj = _merge_obj(hasobj, None)
        if fields is not None:
            if isinstance(fields, dict) and fields:
                for v in fields.values():
                    fd = v[0] if isinstance(v, tuple) and v else None
                    hasobj = _merge_obj(hasobj, _dtype_info(fd, depth + 1)[0])
            else:
                hasobj = _merge_obj(hasobj, None)
    elif st is not None:
        hasobj = _merge_obj(hasobj, None)
    return hasobj, size


def _walk_pickles(f: _In, node: _Node, member: str | None, limits: ScanLimits,
                  *, first_only: bool = False) -> int:
    """Read consecutive pickles from ``f`` to the end of the content (every one: a loader may
    read more than the first). Returns how many were read. Records globals, problems and, if
    the bytes are a pickle at all, ``node.code``."""
    m = _PickleMachine(f, node, member)
    count = 0
    torch_legacy = False
    while True:
        start = f.pos
        n_globals = len(node.globals)
        try:
            value = m.load_one()
        except (_PickleError, _BadStream, _LimitExceeded) as e:
            new_globals = len(node.globals) > n_globals
            if count == 0 and not new_globals:
                if isinstance(e, _PickleError):
                    return 0  # not a pickle: a loader fails before it can call anything
                raise
            node.code = True
            if torch_legacy and count >= 5 and not new_globals and \
                    not isinstance(e, _LimitExceeded):
                node.notes.append("raw tensor storage after the pickles of a legacy PyTorch "
                                  "checkpoint (read as bytes by torch.load, never unpickled)")
            elif isinstance(e, _LimitExceeded):
                node.problems.append(f"stopped in pickle {count + 1}: {e}")
            elif not new_globals:
                node.problems.append(f"the bytes at offset {start}, after {count} pickle(s), "
                                     "are not a pickle and were not read")
            else:
                node.problems.append(f"pickle {count + 1} at offset {start} is malformed "
                                     f"({e}); the imports before that point are listed")
            return count
        node.code = True
        count += 1
        if count == 1 and type(value) is int and value == _TORCH_LEGACY_MAGIC:
            torch_legacy = True
            node.formats.append("pytorch-legacy")
        if first_only or f.at_eof():
            return count
        if count >= limits.max_pickles:
            node.code = True
            node.problems.append(f"more than {limits.max_pickles} pickles; the rest not read")
            return count


# --- numpy .npy ----------------------------------------------------------------------------


def _descr_info(descr: Any, depth: int = 0) -> bool | None:
    """Whether a .npy header's ``descr`` has objects (None: cannot be told)."""
    if depth > 32:
        return None
    if isinstance(descr, str):
        return _typestr_info(descr)[0]
    if isinstance(descr, tuple):  # (dtype, shape): a subarray
        return _descr_info(descr[0], depth + 1) if len(descr) == 2 else None
    if isinstance(descr, list) and descr:  # [(name, dtype[, shape]), ...]
        out: bool | None = False
        for fld in descr:
            if not (isinstance(fld, tuple) and len(fld) in (2, 3)):
                return None
            out = _merge_obj(out, _descr_info(fld[1], depth + 1))
        return out
    return None


def _scan_npy(f: _In, node: _Node, member: str | None, limits: ScanLimits) -> None:
    """``numpy.load`` reads the header with ``ast.literal_eval``; an array whose dtype has
    objects is then ``pickle.load``-ed from the rest of the file."""
    head = f.read(8)
    major = head[6] if len(head) == 8 else 0
    k = 2 if major == 1 else 4
    raw = f.read(k)
    if len(raw) < k or major not in (1, 2, 3):
        node.opaque = "an .npy header numpy does not read"
        return
    hlen = int.from_bytes(raw, "little")
    if hlen > 1 << 20:  # numpy reads any size with allow_pickle=True
        node.code = True
        node.problems.append(f"an .npy header of {hlen} bytes is not read")
        return
    header = f.read(hlen)
    try:
        text = header.decode("utf-8" if major == 3 else "latin-1")
        try:
            d = ast.literal_eval(text)
        except SyntaxError:
            # numpy's _filter_header: Python 2 headers spell integers 1L
            d = ast.literal_eval(re.sub(r"\b(\d+)[lL]\b", r"\1", text))
        descr = d["descr"]
    except (ValueError, SyntaxError, KeyError, TypeError, UnicodeDecodeError, MemoryError,
            RecursionError):
        # numpy also accepts Python 2 spellings (1L) this reading does not: not proved safe
        node.code = True
        node.problems.append("an .npy header modelseal cannot read")
        return
    hasobj = _descr_info(descr)
    if hasobj is False:
        node.data = True
        return
    node.formats.append("object-array" if hasobj else "npy-unknown-dtype")
    node.notes.append(f"dtype {descr!r} " + ("holds Python objects (stored as a pickle)"
                                             if hasobj else "is not known to be object-free"))
    n = _walk_pickles(f, node, member, limits)
    if n == 0:
        if hasobj:
            node.code = True
            node.problems.append("object array whose payload is not a readable pickle")
        else:
            node.opaque = f"an .npy array of dtype {descr!r} modelseal cannot read"


# --- compression, archives, data formats ---------------------------------------------------

_PICKLE_PROTO = tuple(bytes([0x80, v]) for v in range(0, 6))
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_7Z_MAGIC = b"7z\xbc\xaf\x27\x1c"
_LZ4_MAGIC = b"\x04\x22\x4d\x18"
_JOBLIB_ZFILE = b"ZF"  # joblib < 0.10 "zfile": b"ZF" + hex length + zlib stream
_OTHER_MAGIC: list[tuple[bytes, int, str, bool]] = [  # magic, offset, format, holds code?
    (b"GGUF", 0, "gguf", False),
    (b"\x89HDF\r\n\x1a\n", 0, "hdf5", True),
    (b"\x7fELF", 0, "native-library", True),
    (b"MZ", 0, "native-library", True),
    (b"\xcf\xfa\xed\xfe", 0, "native-library", True),
    (b"\xca\xfe\xba\xbe", 0, "native-library", True),
    (_7Z_MAGIC, 0, "7z-archive", True),
    (b"\x89PNG\r\n\x1a\n", 0, "image", False),
    (b"\xff\xd8\xff", 0, "image", False),
    (b"GIF8", 0, "image", False),
    (b"PAR1", 0, "parquet", False),
    (b"ARROW1", 0, "arrow", False),
    (b"TFL3", 4, "tflite", False),
]
_OPAQUE_WHY = {
    "hdf5": "HDF5 (Keras .h5 can hold Lambda layers of marshalled Python); not analysed",
    "native-library": "native code",
    "7z-archive": "7z archives are not opened by modelseal",
    "python-source": "Python source: runs if the model is loaded with remote code",
    "python-bytecode": "Python bytecode",
    "keras": "Keras archive (can hold Lambda layers); not analysed",
    "tensorflow-graph": "TensorFlow graphs can call file and network ops; not analysed",
    "torchscript": "TorchScript code (run by torch.jit.load); not analysed",
}
# Extensions only ever make a verdict stricter: a data-looking file with one of these names is
# still reported, because the loader that name implies runs code modelseal does not analyse.
_OPAQUE_EXT = {".py": "python-source", ".pyc": "python-bytecode", ".h5": "hdf5",
               ".hdf5": "hdf5", ".keras": "keras", ".pb": "tensorflow-graph",
               ".so": "native-library", ".dll": "native-library", ".dylib": "native-library",
               ".7z": "7z-archive"}


def _is_zlib(head: bytes) -> bool:
    if len(head) < 2:
        return False
    cmf, flg = head[0], head[1]
    return cmf & 0x0F == 8 and cmf >> 4 <= 7 and (cmf << 8 | flg) % 31 == 0 and not flg & 0x20


class _ZlibReader(io.RawIOBase):
    """Streaming zlib decompression (joblib's default ``compress=True``)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._d = zlib.decompressobj()
        self._buf = b""
        self._off = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        # decompress at most 1 MiB per call: a bomb never sits in memory whole
        while self._off >= len(self._buf):
            if self._d.eof:
                return 0
            chunk = self._d.unconsumed_tail or self._raw.read(1 << 16)
            if not chunk:
                raise EOFError("zlib stream ends early")
            self._buf, self._off = self._d.decompress(chunk, 1 << 20), 0
        n = min(len(b), len(self._buf) - self._off)
        b[:n] = self._buf[self._off:self._off + n]
        self._off += n
        return n


class _ClosingBoth(io.RawIOBase):
    """A decompressing reader that ends where the stream breaks and closes the stream under it
    (GzipFile, BZ2File and LZMAFile leave a passed file object open).

    A loader decompresses and unpickles as it goes: a payload before a corrupt or truncated
    spot runs before the loader fails. So the content seen here is every byte decompressed
    before the fault, then the end (``fault`` says why); the readers above then find the
    payload, or a pickle cut short."""

    def __init__(self, inner: IO[bytes], outer: IO[bytes]) -> None:
        self._inner = inner
        self._outer = outer
        self.fault: str | None = None

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        out = bytearray()
        read1 = getattr(self._inner, "read1", self._inner.read)
        while self.fault is None and (n < 0 or len(out) < n):
            try:
                chunk = read1(1 << 20 if n < 0 else n - len(out))
            except (OSError, EOFError, zlib.error, lzma.LZMAError, RuntimeError, ValueError,
                    NotImplementedError, struct.error) as e:
                self.fault = f"{type(e).__name__}: {e}"
                break
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def readline(self, limit: int | None = -1) -> bytes:
        out = bytearray()
        while limit is None or limit < 0 or len(out) < limit:
            c = self.read(1)
            if not c:
                break
            out += c
            if c == b"\n":
                break
        return bytes(out)

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._outer.close()
            super().close()


class _Prepend(io.RawIOBase):
    def __init__(self, first: bytes, rest: IO[bytes]) -> None:
        self._first = first
        self._rest = rest

    def read(self, n: int = -1) -> bytes:
        if self._first:
            out, self._first = self._first[:n], self._first[n:]
            return out
        return self._rest.read(n)


def _decompressor(head: bytes) -> tuple[str, Callable[[IO[bytes]], IO[bytes]]] | None:
    """The compression a file's first bytes announce, and a function that opens a reader of
    the decompressed bytes (every one joblib.load recognises, plus gzip/bz2/xz wrappers)."""
    if head.startswith(b"\x1f\x8b"):
        return "gzip", lambda f: cast(IO[bytes], gzip.GzipFile(fileobj=f))
    if head.startswith(b"BZh"):
        return "bz2", lambda f: cast(IO[bytes], bz2.BZ2File(f))
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz", lambda f: cast(IO[bytes], lzma.LZMAFile(f))
    if head.startswith(b"\x5d\x00\x00"):
        return "lzma", lambda f: cast(IO[bytes], lzma.LZMAFile(f, format=lzma.FORMAT_ALONE))
    if head.startswith(_LZ4_MAGIC):
        def lz4open(f: IO[bytes]) -> IO[bytes]:
            try:
                import lz4.frame  # type: ignore[import-not-found,import-untyped,unused-ignore]
            except ImportError as e:
                raise _Unreadable("lz4 frame, and the lz4 package is not installed") from e
            return cast(IO[bytes], lz4.frame.LZ4FrameFile(f))
        return "lz4", lz4open
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        def zstd(f: IO[bytes]) -> IO[bytes]:
            # pandas.read_pickle opens .zst pickles; modelseal does not decompress zstd
            raise _Unreadable("zstd-compressed content is not opened by modelseal")
        return "zstd", zstd
    if head.startswith(_JOBLIB_ZFILE) and len(head) >= 21:
        try:
            int(head[2:21].decode("ascii").strip(), 16)
        except (UnicodeDecodeError, ValueError):
            return None

        def zfile(f: IO[bytes]) -> IO[bytes]:
            f.read(21)
            nxt = f.read(1)
            return cast(IO[bytes], io.BufferedReader(
                _ZlibReader(cast(IO[bytes], _Prepend(b"" if nxt == b" " else nxt, f)))))
        return "joblib-zfile", zfile
    if _is_zlib(head):
        return "zlib", lambda f: cast(IO[bytes], io.BufferedReader(_ZlibReader(f), 1 << 20))
    return None


class _Unreadable(Exception):
    """Content that announces a format which cannot be read here."""


def _check_safetensors(f: _In, size: int | None) -> bool:
    head = f.read(8)
    if len(head) < 8:
        return False
    (n,) = struct.unpack("<Q", head)
    if n < 2 or n > 100 * 1024 * 1024 or (size is not None and n > size - 8):
        return False
    if f.read(1) != b"{":
        return False
    raw = b"{" + f.read(n - 1)
    if len(raw) < n:
        return False
    try:
        hdr = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(hdr, dict)


def _protobuf_fields(f: _In, limit: int = 1 << 16) -> list[int] | None:
    """The top-level field numbers of a protobuf message that fills the content exactly, or
    None when the bytes are not one."""
    seen: list[int] = []
    while True:
        b = f.read(1)
        if not b:
            return seen or None
        tag = _varint(f, b[0])
        if tag is None:
            return None
        num, wt = tag >> 3, tag & 7
        if num == 0:
            return None
        if wt == 0:
            if _varint(f) is None:
                return None
        elif wt == 1:
            if not f.skip(8):
                return None
        elif wt == 5:
            if not f.skip(4):
                return None
        elif wt == 2:
            n = _varint(f)
            if n is None or not f.skip(n):
                return None
        else:
            return None
        if len(seen) < limit:
            seen.append(num)


def _varint(f: _In, first: int | None = None) -> int | None:
    out, shift = 0, 0
    b = first
    for _ in range(10):
        if b is None:
            c = f.read(1)
            if not c:
                return None
            b = c[0]
        out |= (b & 0x7F) << shift
        if not b & 0x80:
            return out
        shift += 7
        b = None
    return None


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start >= len(head) - 3  # cut inside a multi-byte character
    return True


def _analyse(opener: Callable[[], IO[bytes]], name: str, member: str | None, depth: int,
             budget: _Budget, *, expanded: bool, size: int | None) -> _Node:
    """Everything a loader could make of one piece of content. Every reading that applies is
    tried and their results merged: a file that is both a zip and a pickle is both."""
    node = _Node()
    try:
        _analyse_into(node, opener, name, member, depth, budget, expanded=expanded, size=size)
    except _LimitExceeded as e:
        node.code = True  # what was not read may be code: never "safe"
        node.problems.append(str(e))
    return node


def _analyse_into(node: _Node, opener: Callable[[], IO[bytes]], name: str, member: str | None,
                  depth: int, budget: _Budget, *, expanded: bool, size: int | None) -> None:
    limits = budget.limits

    def reader() -> _In:
        return _In(opener(), budget if expanded else None, limits.max_line)

    with opener() as raw:
        try:
            head = raw.read(4096)
        except (OSError, EOFError, zlib.error, lzma.LZMAError, RuntimeError,
                NotImplementedError, struct.error) as e:
            raise _BadStream(f"{type(e).__name__}: {e}") from e
    if expanded:
        budget.spend(len(head))
    if not head:
        node.formats.append("empty")  # nothing for any loader to run
        node.data = True
        return
    # 1. as a pickle from the first byte: what pickle.load, joblib.load, numpy.load
    #    (allow_pickle) and torch.load (non-zip) do
    pk = _Node()
    with reader() as f:
        _walk_pickles(f, pk, member, limits)
    # 2. containers and wrappers announced by the first bytes
    if head.startswith(_NPY_MAGIC):
        node.formats.append("npy")
        try:
            with reader() as f:
                _scan_npy(f, node, member, limits)
        except _BadStream as e:
            node.code = True
            node.problems.append(f"npy: {e}")
    dec = _decompressor(head)
    if dec is not None:
        kind, open_dec = dec
        if depth >= limits.max_depth:
            node.code = True
            node.problems.append(f"{kind} nested more than {limits.max_depth} deep: not read")
        else:
            def dec_opener() -> IO[bytes]:
                outer = opener()
                try:
                    return cast(IO[bytes], _ClosingBoth(open_dec(outer), outer))
                except BaseException:
                    outer.close()
                    raise
            try:
                inner = _analyse(dec_opener, name, member, depth + 1, budget, expanded=True,
                                 size=None)
                node.formats.append(kind)
                node.formats += inner.formats
                node.merge(inner, None)
                node.data |= inner.data and not inner.code
                node.notes += inner.notes
            except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError, _BadStream,
                    _Unreadable) as e:
                # a wrapper that does not decompress is not this format; one that cannot be
                # read here (lz4 missing) may hide a pickle
                if isinstance(e, _Unreadable):
                    node.code = True
                    node.problems.append(f"{kind}: {e}")
    if _is_zip(opener, head):
        _scan_archive(opener, "zip", node, member, depth, budget)
    if _looks_like_tar(head):  # both: a tar with a zip appended is read by torch as a tar
        _scan_archive(opener, "tar", node, member, depth, budget)
    # 3. data formats, by content
    if not node.code and not node.formats:
        for magic, off, fmt, code in _OTHER_MAGIC:
            if head[off:off + len(magic)] == magic:
                node.formats.append(fmt)
                if code:
                    node.opaque = _OPAQUE_WHY[fmt]
                else:
                    node.data = True
                break
        else:
            _data_formats(node, reader, head, size)
    # The pickle reading counts when it imports anything. One that imports nothing cannot run
    # code; it is dropped when the bytes are also a data format (a safetensors header length
    # can read as "N.") or an archive member no loader unpickles (PyTorch's raw storages):
    # random bytes read as a tiny pickle followed by no pickle would otherwise be "unknown".
    raw_member = member is not None and not name.lower().endswith((".pkl", ".pickle"))
    # A file that starts with a zip local header is read as a zip by torch.load and
    # numpy.load; pickle.load and joblib.load fail on its first opcode (PERSID, "P", with no
    # persistent_load). Reading on into the zip's stored members would find their imports
    # out of context, so that reading is dropped when the zip itself was read.
    zip_first = head.startswith(b"PK\x03\x04") and "zip" in node.formats
    if zip_first and pk.code:
        node.notes.append("starts with a zip header: not read as a pickle (pickle.load fails "
                          "on its first opcode; torch.load and numpy.load read the zip)")
    elif pk.globals or (pk.code and not node.data and not raw_member):
        node.formats[:0] = ["pickle", *pk.formats]
        node.merge(pk, None)
        node.notes += pk.notes
    elif pk.code:
        node.notes.append("the bytes also read as a pickle that imports nothing (ignored)")
    ext = os.path.splitext(name)[1].lower()
    if ext in _OPAQUE_EXT and not node.opaque:
        if not node.code:  # a data reading of the bytes gives way to what the name implies
            node.formats.clear()
        node.formats.append(_OPAQUE_EXT[ext])
        node.opaque = _OPAQUE_WHY[_OPAQUE_EXT[ext]]


def _data_formats(node: _Node, reader: Callable[[], _In], head: bytes, size: int | None) -> None:
    """Formats that hold data only, recognised by their content."""
    try:
        with reader() as f:
            if _check_safetensors(f, size):
                node.formats.append("safetensors")
                node.data = True
        if not node.data and _looks_like_text(head):
            node.formats.append("text")
            node.data = True
        if not node.data:
            with reader() as f:
                fields = _protobuf_fields(f)
            if fields:
                onnx = 1 in fields and 7 in fields
                node.formats.append("onnx" if onnx else "protobuf")
                node.data = True
    except _BadStream:
        node.data = False


def _looks_like_tar(head: bytes) -> bool:
    """A first tar header that ``tarfile`` (and so torch.load's legacy tar path) accepts: the
    ustar magic, or any old-style header whose checksum is right."""
    if len(head) < 512:
        return False
    if head[257:262] == b"ustar":
        return True
    try:
        tarfile.TarInfo.frombuf(head[:512], "utf-8", "surrogateescape")
    except (tarfile.HeaderError, ValueError):
        return False
    return True


def _is_zip(opener: Callable[[], IO[bytes]], head: bytes) -> bool:
    if head.startswith(_ZIP_MAGIC):
        return True
    with opener() as f:
        try:
            return zipfile.is_zipfile(f) if f.seekable() else False
        except OSError:
            return False


def _scan_archive(opener: Callable[[], IO[bytes]], kind: str, node: _Node, member: str | None,
                  depth: int, budget: _Budget) -> None:
    """Every member of a zip (PyTorch zip checkpoints, .npz, Keras) or tar (PyTorch legacy
    tar) is analysed as content of its own; findings name the member."""
    limits = budget.limits
    prefix = f"{member}/" if member else ""
    if depth >= limits.max_depth:
        node.code = True
        node.problems.append(f"{kind} nested more than {limits.max_depth} deep: not read")
        return
    with opener() as raw:
        src: IO[bytes] = raw
        spool = None
        if not raw.seekable():
            spool = tempfile.SpooledTemporaryFile(max_size=32 << 20)  # noqa: SIM115
            while chunk := raw.read(1 << 20):
                budget.spend(len(chunk))
                spool.write(chunk)
            spool.seek(0)
            src = cast(IO[bytes], spool)
        all_data = True  # every member a recognised data format: the archive holds data only
        try:
            names: list[str] = []
            if kind == "zip":
                from picklescan.relaxed_zipfile import RelaxedZipFile

                try:
                    zf = RelaxedZipFile(src, "r")
                except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError,
                        NotImplementedError, struct.error) as e:
                    src.seek(0)
                    if src.read(4) != b"PK\x03\x04":
                        node.opaque = f"unreadable zip archive: {e}"
                        return
                    # torch.load reads zips Python's zipfile refuses (its reader checks less):
                    # walk the local headers as such a reader would; never "safe"
                    node.formats.append("zip")
                    node.code = True
                    node.problems.append(f"a zip archive Python's zipfile cannot read ({e}): "
                                         "members read from their local headers")
                    _walk_local_headers(src, node, prefix, depth, budget)
                    return
                with zf:
                    infos = zf.infolist()
                    if len(infos) > limits.max_members:
                        node.code = True
                        node.problems.append(f"more than {limits.max_members} zip members")
                        return
                    node.formats.append("zip")
                    for info in infos:
                        if info.filename.endswith("/"):  # is_dir() fails on an empty name
                            continue
                        names.append(info.filename)
                        def open_zip_member(i: zipfile.ZipInfo = info) -> IO[bytes]:
                            m = zf.open(i, "r")
                            # torch's zip reader does not check CRCs: neither do we, so a
                            # member's bytes are seen as that loader sees them
                            if hasattr(m, "_expected_crc"):
                                m._expected_crc = None
                            return cast(IO[bytes], m)
                        all_data &= _member(open_zip_member, info.filename, prefix, node,
                                            depth, budget, info.file_size)
            else:
                try:
                    tf = tarfile.open(fileobj=src, mode="r:")  # noqa: SIM115
                except (tarfile.TarError, OSError, EOFError) as e:
                    node.opaque = f"unreadable tar archive: {e}"
                    return
                with tf:
                    node.formats.append("tar")
                    members = iter(tf)
                    i = -1
                    while True:
                        i += 1
                        try:
                            ti = next(members)
                        except StopIteration:
                            break
                        except (tarfile.TarError, OSError, EOFError) as e:
                            node.code = True  # members after this point are not seen
                            node.problems.append(f"tar unreadable after {i} member(s): {e}")
                            break
                        if i >= limits.max_members:
                            node.code = True
                            node.problems.append(f"more than {limits.max_members} tar members")
                            return
                        if not ti.isfile():
                            continue
                        names.append(ti.name)

                        def open_member(ti: tarfile.TarInfo = ti) -> IO[bytes]:
                            x = tf.extractfile(ti)
                            assert x is not None
                            return x
                        all_data &= _member(open_member, ti.name, prefix, node, depth, budget,
                                            ti.size)
        finally:
            if spool is not None:
                spool.close()
    if all_data and not node.code and not node.opaque:
        node.data = True
    base = {n.rsplit("/", 1)[-1] for n in names}
    if any(n.endswith("data.pkl") for n in names):
        node.formats.append("pytorch-zip" if kind == "zip" else "pytorch-legacy-tar")
    if kind == "tar" and {"sys_info", "pickle", "storages"} <= base:
        node.formats.append("pytorch-legacy-tar")
    if any(n.startswith("code/") or "/code/" in n for n in names) and \
            any(n.endswith("data.pkl") or n.endswith("constants.pkl") for n in names):
        node.formats.append("torchscript")
        node.opaque = node.opaque or _OPAQUE_WHY["torchscript"]
    if {"config.json", "model.weights.h5"} <= base:
        node.formats.append("keras")
        node.opaque = node.opaque or _OPAQUE_WHY["keras"]
    if names and all(n.endswith(".npy") for n in names):
        node.formats.append("npz")


def _walk_local_headers(src: IO[bytes], node: _Node, prefix: str, depth: int,
                        budget: _Budget) -> None:
    """Members of a damaged zip, from its local file headers in order."""
    limits = budget.limits
    src.seek(0)
    for _ in range(limits.max_members):
        hdr = src.read(30)
        if len(hdr) < 30 or hdr[:4] != b"PK\x03\x04":
            return
        _, _, flags, method, _, _, _, csize, _, nlen, xlen = struct.unpack("<4s5H3L2H", hdr)
        name = src.read(nlen).decode("utf-8", "replace")
        src.seek(xlen, io.SEEK_CUR)
        spool = tempfile.SpooledTemporaryFile(max_size=32 << 20)  # noqa: SIM115
        try:
            if method == 0:
                left = csize
                while left > 0:
                    chunk = src.read(min(left, 1 << 20))
                    if not chunk:
                        break
                    budget.spend(len(chunk))
                    spool.write(chunk)
                    left -= len(chunk)
            elif method == 8:
                d = zlib.decompressobj(-15)
                while not d.eof:
                    chunk = d.unconsumed_tail or src.read(1 << 16)
                    if not chunk:
                        break
                    try:
                        out = d.decompress(chunk, 1 << 20)
                    except zlib.error:
                        break
                    budget.spend(len(out))
                    spool.write(out)
                # the compressed stream ends where the decompressor stopped
                src.seek(-len(d.unused_data), io.SEEK_CUR)
                if flags & 0x08:  # data descriptor after the data
                    src.seek(16 if src.read(4) == b"PK\x07\x08" else 8, io.SEEK_CUR)
            else:
                node.problems.append(f"{prefix}{name}: compression method {method} not read")
                return
            size = spool.tell()
            sp = cast(IO[bytes], spool)

            def opener(sp: IO[bytes] = sp) -> IO[bytes]:
                sp.seek(0)
                return cast(IO[bytes], _NoClose(sp))
            _member(opener, name, prefix, node, depth, budget, size)
        finally:
            spool.close()


class _NoClose(io.RawIOBase):
    """A view of a spooled member that leaves it open when the reader is closed."""

    def __init__(self, inner: IO[bytes]) -> None:
        self._inner = inner

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._inner.seek(offset, whence)

    def tell(self) -> int:
        return self._inner.tell()

    def readinto(self, b: Any) -> int:
        data = self._inner.read(len(b))
        b[:len(data)] = data
        return len(data)

    def readline(self, limit: int | None = -1) -> bytes:
        return self._inner.readline(-1 if limit is None else limit)


def _member(open_m: Callable[[], IO[bytes]], name: str, prefix: str, node: _Node, depth: int,
            budget: _Budget, size: int) -> bool:
    """Analyse one archive member into ``node``; True when it is a recognised data format."""
    try:
        inner = _analyse(open_m, name, prefix + name, depth + 1, budget, expanded=True,
                         size=size)
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError, EOFError,
            zlib.error, tarfile.TarError, _BadStream) as e:
        node.code = True
        node.problems.append(f"{prefix}{name}: unreadable member ({e})")
        return False
    node.merge(inner, None)
    if inner.code or inner.opaque:
        node.notes.append(f"{prefix}{name}: {'+'.join(inner.formats) or 'unknown'}")
    return inner.data and not inner.code and not inner.opaque


# --- verdicts ------------------------------------------------------------------------------

_SEVERITY_RANK = {"innocuous": 0, "suspicious": 1, "dangerous": 2}
# Rated innocuous by modelseal where picklescan says suspicious: joblib's own array wrapper,
# whose BUILD only sets attributes (joblib then reads the array bytes the scanner follows).
_EXTRA_INNOCUOUS = {("joblib.numpy_pickle", "NumpyArrayWrapper")}


def _classify(globs: set[tuple[str, str]], file_id: str) -> dict[tuple[str, str], str]:
    """Severity of each import, from picklescan's allow and block lists (asked through its
    public API with a pickle that only imports them). Python 2 names are also read as the
    Python 3 names ``pickle`` maps them to, and the worse rating wins."""
    import _compat_pickle

    from picklescan.scanner import scan_pickle_bytes

    out: dict[tuple[str, str], str] = {}
    asked: set[tuple[str, str]] = set()
    alias: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for m, n in globs:
        if m == "<computed>":
            out[(m, n)] = "dangerous"  # the import's name is computed: it cannot be told
            continue
        if m == "copyreg.extension":
            out[(m, n)] = "suspicious"
            continue
        mapped = _compat_pickle.NAME_MAPPING.get((m, n)) or (
            _compat_pickle.IMPORT_MAPPING.get(m, m), n)
        # protocol 4 names may be dotted (os.system.__call__): the first part is the callable
        # fetched from the module, rated too
        names = [(m, n), mapped, (m, n.split(".")[0]), (mapped[0], mapped[1].split(".")[0])]
        alias[(m, n)] = names
        asked |= set(names)
    if asked:
        buf = io.BytesIO()
        buf.write(b"\x80\x04")
        for m, n in sorted(asked):
            for s in (m, n):
                b = s.encode("utf-8", "surrogatepass")
                buf.write(b"\x8d" + struct.pack("<Q", len(b)) + b)
            buf.write(b"\x93" + b"0")
        buf.write(b"N.")
        buf.seek(0)
        res = scan_pickle_bytes(buf, file_id)
        got = {(g.module, g.name): str(g.safety.value) for g in res.globals}
        for x in _EXTRA_INNOCUOUS:
            if got.get(x) == "suspicious":
                got[x] = "innocuous"
        for key, names in alias.items():
            sev = [got.get(x, "suspicious") for x in names]
            out[key] = max(sev, key=lambda s: _SEVERITY_RANK.get(s, 1))
    return out


_MAIN_FORMATS = ["torchscript", "pytorch-zip", "pytorch-legacy-tar", "keras", "npz",
                 "pytorch-legacy", "npy", "zip", "tar", "pickle"]
_IMPLIED = {"torchscript": {"zip", "pytorch-zip"}, "pytorch-zip": {"zip"}, "keras": {"zip"},
            "npz": {"zip"}, "pytorch-legacy-tar": {"tar"}, "pytorch-legacy": {"pickle"},
            "npy": {"object-array", "npy-unknown-dtype"}}


def _format_name(formats: list[str]) -> str:
    seen = list(dict.fromkeys(formats))
    if not seen:
        return "unknown"
    main = next((m for m in _MAIN_FORMATS if m in seen), seen[0])
    rest = [f for f in seen if f != main and f not in _IMPLIED.get(main, set())]
    return "+".join([main, *rest])


def _scan_file(path: Path, rel: str, limits: ScanLimits) -> FileSafety:
    budget = _Budget(limits)

    def opener() -> IO[bytes]:
        return open(path, "rb")

    try:
        node = _analyse(opener, path.name, None, 0, budget, expanded=False,
                        size=path.stat().st_size)
    except OSError:
        raise
    except Exception as e:  # fail closed: a scanner fault is never "safe"
        node = _Node(code=True, problems=[f"scanner error: {type(e).__name__}: {e}"])
    sev = _classify({(m, n) for m, n, _ in node.globals}, rel)
    findings = [PickleGlobal(f"{m}.{n}" if m != "copyreg.extension"
                             else f"copyreg extension {n}", sev[(m, n)], mem)
                for m, n, mem in node.globals]
    findings = _dedup(findings)
    levels = {f.severity for f in findings}
    notes = list(dict.fromkeys(node.problems + ([node.opaque] if node.opaque else [])
                               + node.notes))
    if "dangerous" in levels:
        verdict = "unsafe"
    elif node.problems:
        verdict = "unknown"
    elif "suspicious" in levels:
        verdict = "suspicious"
    elif node.code:
        verdict = "unknown" if node.opaque else "safe"
    elif node.opaque:
        verdict = "unknown"
    elif node.data:
        verdict = "no-code-format"
    else:
        verdict = "unknown"
        notes.insert(0, "format not recognised")
    return FileSafety(rel, "", _format_name(node.formats), verdict, findings,
                      "; ".join(notes)[:2000] or None, code_executing=node.code)


def _dedup(findings: list[PickleGlobal]) -> list[PickleGlobal]:
    seen: dict[tuple[str, str, str | None], PickleGlobal] = {}
    for f in findings:
        seen.setdefault((f.callable, f.severity, f.member), f)
    order = {"dangerous": 0, "suspicious": 1, "innocuous": 2}
    return sorted(seen.values(),
                  key=lambda f: (order.get(f.severity, 3), f.member or "", f.callable))


def scanner_version() -> str:
    """Version of the installed picklescan (whose allow and block lists rate the imports)."""
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
        from modelseal._util.fs import walk_files

        return [f.path for f in walk_files(root, follow_symlinks=True)]
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


def scan_model(root: Path, files: list[Path] | None = None,
               limits: ScanLimits = DEFAULT_LIMITS) -> SafetyReport:
    """Scan the files of a model directory (all regular files under ``root`` when ``files`` is
    None; relative entries of ``files`` are taken relative to ``root``). Nothing is loaded:
    each file is read by content, never by name (names only ever make a verdict stricter)."""
    root = Path(root)
    paths = _resolve_files(root, files)
    digests = hash_files(paths)
    results: list[FileSafety] = []
    for p, d in zip(paths, digests, strict=True):
        rel = _rel(root, p) if p.is_relative_to(root) else _rel(root.resolve(), p.resolve())
        try:
            fs = _scan_file(p, rel, limits)
        except OSError as e:
            raise InputError(f"cannot read {p}: {e.strerror or e}") from e
        fs.sha256 = d.sha256
        results.append(fs)
    results.sort(key=lambda r: r.path)
    now = rfc3339(_dt.datetime.now(_dt.UTC))
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
            "engine": ENGINE,
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
            "unprovenCode": sum(1 for f in report.files if f.unproven_code),
        },
        "files": [f.to_dict() for f in report.files],
    }


def safety_subjects(report: SafetyReport) -> list[dict[str, Any]]:
    """in-toto subjects (name = relative path, sha256 digest) of the files in ``report``."""
    return [{"name": f.path, "digest": {"sha256": f.sha256}} for f in report.files]


def report_from_predicate(predicate: dict[str, Any]) -> SafetyReport:
    """Read a model-safety predicate back into a :class:`SafetyReport`."""
    return SafetyReport.from_dict(predicate)


def _code_executing(f: dict[str, Any]) -> bool:
    """A file entry's ``codeExecuting``; for predicates written before the field existed,
    guessed from its format (fail closed: any pickle-family format counts)."""
    v = f.get("codeExecuting")
    if isinstance(v, bool):
        return v
    fmt = str(f.get("format", ""))
    return any(part in CODE_FORMATS for part in fmt.split("+"))


def _iter_unsafe(predicate: dict[str, Any], include_suspicious: bool,
                 include_unknown: bool) -> Iterator[str]:
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
        refused = (verdict == "unsafe"
                   or (verdict == "unknown" and (include_unknown or _code_executing(f)))
                   or (verdict == "suspicious" and include_suspicious))
        if not refused:
            continue
        hits = [x for x in f.get("findings") or [] if isinstance(x, dict)
                and x.get("severity") in ("dangerous", "suspicious")]
        if verdict == "unsafe":
            hits = [x for x in hits if x.get("severity") == "dangerous"] or hits
        elif verdict == "unknown":
            hits = []
        label = verdict
        if verdict == "unknown" and _code_executing(f):
            label = "unknown: code-executing format not proved safe"
        if not hits:
            yield f"{f['path']} is {label}" + (f": {f['note']}" if f.get("note") else "")
        for x in hits:
            where = f"{f['path']} ({x['member']})" if x.get("member") else f["path"]
            yield f"{where} imports {x.get('callable')} ({verdict})"


def unsafe_findings(predicate: dict[str, Any], *, include_suspicious: bool = False,
                    include_unknown: bool = False) -> list[str]:
    """Messages for every file of a model-safety predicate a policy refuses, e.g.
    ``"model/evil.pkl imports os.system (unsafe)"``. Empty means nothing refused.

    Always refused: ``unsafe`` files, and ``unknown`` files in a code-executing format (the
    scanner could not prove them safe). ``include_suspicious`` also refuses ``suspicious``
    files, ``include_unknown`` every ``unknown`` file (formats modelseal does not analyse).
    Fails closed: a malformed predicate yields a message rather than an empty list.
    """
    return list(_iter_unsafe(predicate, include_suspicious, include_unknown))


def sign_scan(report: SafetyReport, signer: Any, *,
              attestations_dir: str | os.PathLike[str] | None = None) -> Path:
    """Sign ``report`` as an in-toto Statement (predicate :data:`SAFETY_PREDICATE`, subjects
    = the scanned files named as ``push`` names them) and write it by the naming rule of
    :mod:`modelseal.attest.output` (``scan.<keyid8>.intoto.sigstore.json``), where
    ``push --attestations`` picks it up. A FAILED result is signed too: it is evidence.
    What ``modelseal scan --signer`` does; returns the file written."""
    from modelseal.attest.output import sign_and_write
    from modelseal.attest.statement import statement
    from modelseal.formats import SAFETY_PREDICATE

    subjects = [(s["name"], s["digest"]["sha256"]) for s in safety_subjects(report)]
    st = statement(subjects, SAFETY_PREDICATE, safety_predicate(report))
    return sign_and_write(st, signer, "scan", directory=attestations_dir).path
