"""One reader for JSON that comes from outside (registries, files, signed payloads).

``loads`` is strict and bounded, so every parser above it gets plain, well-formed values or a
clear error, never a crash:

- size: at most ``max_bytes`` (refused before parsing);
- encoding: UTF-8 only (RFC 8259 section 8.1); a byte-order mark is refused;
- depth: arrays and objects nested at most ``max_depth`` levels. The C decoder gives up at
  the interpreter's recursion limit (about 1,000 levels, a cheap RecursionError turned into
  the refusal); what it parses is then walked, iteratively, to the bound;
- duplicate keys in one object are refused: parsers disagree on which one wins (first, last,
  error), and a signed document that two tools read differently is an attack waiting to
  happen (the same reason Go's encoding/json hardening and RFC 8785 refuse them);
- ``NaN``, ``Infinity`` and ``-Infinity`` are refused (not JSON);
- strings with lone UTF-16 surrogates (``"\\ud800"``) are refused: they cannot be encoded
  back to UTF-8, so they would crash whoever writes or prints them later.

``check_value`` applies the same bounds to values from other parsers (YAML).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, NoReturn

from modelseal._util.limits import MAX_JSON_BYTES, MAX_JSON_DEPTH, MAX_VALUE_NODES
from modelseal.errors import InputError, ModelsealError

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class _Refused(ValueError):
    """Raised inside the decoder's hooks; turned into the caller's error class."""


def _deeper_than(value: Any, max_depth: int) -> bool:
    """Whether arrays and objects in ``value`` nest deeper than ``max_depth``. Iterative, and
    it stops at the first container past the bound."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > max_depth:
            return True
        children = v.values() if isinstance(v, dict) else v
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)  # C speed; only a document with a duplicate pays for the search
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _Refused(f"the key {k!r} appears twice in one object")
            seen.add(k)
    return out


def _no_constant(name: str) -> NoReturn:
    raise _Refused(f"{name} is not a JSON value")


def loads(data: bytes | str, *, what: str, max_bytes: int = MAX_JSON_BYTES,
          max_depth: int = MAX_JSON_DEPTH, error: type[ModelsealError] = InputError) -> Any:
    """Parse outside JSON within the bounds; ``error`` (InputError by default) names ``what``.

    ``what`` says what the document is ("manifest sha256:...", "policy p.yaml"), so the
    message tells the reader which input was refused.
    """
    if len(data) > max_bytes:
        raise error(f"{what} is {len(data)} bytes, more than the {max_bytes} modelseal reads")
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise error(f"{what} is not UTF-8 text (byte {e.start})") from e
    else:
        text = data
    if text.startswith("\ufeff"):
        raise error(f"{what} starts with a byte-order mark, which JSON does not allow")
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except _Refused as e:
        raise error(f"{what} is not acceptable JSON: {e}") from e
    except RecursionError as e:
        # the C decoder stops at the interpreter's recursion limit (about 1,000 levels),
        # cheaply and long before memory matters
        raise error(f"{what} nests arrays and objects deeper than {max_depth} levels: "
                    "refused") from e
    except ValueError as e:
        raise error(f"{what} is not valid JSON: {e}") from e
    if (isinstance(value, dict | list) and text.count("[") + text.count("{") > max_depth
            and _deeper_than(value, max_depth)):
        raise error(f"{what} nests arrays and objects deeper than {max_depth} levels: refused")
    if _SURROGATE_ESCAPE.search(text):
        check_value(value, what=what, max_depth=max_depth, error=error)
    return value


def loads_object(data: bytes | str, *, what: str, max_bytes: int = MAX_JSON_BYTES,
                 max_depth: int = MAX_JSON_DEPTH,
                 error: type[ModelsealError] = InputError) -> dict[str, Any]:
    """``loads`` for documents that must be a JSON object."""
    value = loads(data, what=what, max_bytes=max_bytes, max_depth=max_depth, error=error)
    if not isinstance(value, dict):
        raise error(f"{what} is not a JSON object (it is {type_name(value)})")
    return value


def type_name(value: Any) -> str:
    """The JSON name of a value's type, for messages ("an array", "a string", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"


def check_value(value: Any, *, what: str, max_depth: int = MAX_JSON_DEPTH,
                max_nodes: int = MAX_VALUE_NODES,
                error: type[ModelsealError] = InputError) -> None:
    """Refuse a value that JSON cannot carry faithfully or that exceeds the bounds.

    Only null, booleans, finite numbers, UTF-8-encodable strings, lists and string-keyed
    mappings pass; nesting at most ``max_depth``, at most ``max_nodes`` values counting every
    use of a shared (YAML-aliased) value. Iterative: no recursion on hostile depth.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    nodes = 0
    while stack:
        v, depth = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            raise error(f"{what} holds more than {max_nodes} values: refused")
        if v is None or isinstance(v, bool | int):
            continue
        if isinstance(v, float):
            if v != v or v in (float("inf"), float("-inf")):
                raise error(f"{what} holds {v}, which is not a JSON number")
            continue
        if isinstance(v, str):
            _check_text(v, what, error)
            continue
        if depth >= max_depth:
            raise error(f"{what} nests deeper than {max_depth} levels: refused")
        if isinstance(v, list):
            stack.extend((x, depth + 1) for x in v)
        elif isinstance(v, Mapping):
            for k, x in v.items():
                if not isinstance(k, str):
                    raise error(f"{what} has a key {k!r} that is not a string")
                _check_text(k, what, error)
                stack.append((x, depth + 1))
        else:
            raise error(f"{what} holds {type_name(v)} ({str(v)[:40]!r}), which JSON cannot "
                        "carry: quote it as a string")


def _check_text(s: str, what: str, error: type[ModelsealError]) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise error(f"{what} holds a string that is not valid Unicode "
                    f"(lone surrogate at position {e.start})") from e


def canonical_json(obj: Any) -> bytes:
    """The bytes modelseal writes for JSON documents it creates and signs (stable, compact):
    keys sorted, no whitespace, UTF-8. The one canonical form: digests of statements, the
    payloads of DSSE envelopes, manifests and indexes are all these bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
