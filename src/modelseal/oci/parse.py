"""Parsers of what a registry (or an image-layout directory) answers, written for hostile
input: bounded JSON nesting (counted without recursion, so never a RecursionError), every
descriptor field checked for presence and type, errors as StoreError with a clear message.
Pure functions on bytes, fuzzed in tests/test_faults.py. Stdlib only.
"""

from __future__ import annotations

import json
import re
from typing import Any

from modelseal.errors import StoreError
from modelseal.oci.store import Descriptor
from modelseal.refs import DIGEST_RE

MAX_JSON_DEPTH = 32  # OCI documents nest 4 levels; anything deeper is hostile
MAX_ERROR_BYTES = 64 * 1024  # an error body: only its first codes and messages matter

_JSON_STRING_RE = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_JSON_BRACKET_RE = re.compile(rb"[\[\]{}]")


def json_depth(data: bytes, stop_above: int | None = None) -> int:
    """How deeply ``data`` nests JSON arrays and objects (brackets inside strings ignored),
    counted without recursion, so hostile nesting costs linear time and no stack. Stops
    counting once the depth exceeds ``stop_above``."""
    depth = deepest = 0
    for m in _JSON_BRACKET_RE.finditer(_JSON_STRING_RE.sub(b"", data)):
        if m.group() in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and deepest > stop_above:
                    break
        else:
            depth -= 1
    return deepest


def loads_json(data: bytes, what: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse a registry's JSON answer; StoreError (never RecursionError) when it is not JSON
    or nests deeper than ``max_depth``."""
    if json_depth(data, max_depth) > max_depth:
        raise StoreError(f"{what} nests JSON deeper than {max_depth} levels: refused")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        raise StoreError(f"{what} is not valid JSON") from e


def parse_descriptor(obj: Any, what: str) -> Descriptor:
    """A descriptor from a registry answer, every field checked for presence and type."""
    if not isinstance(obj, dict):
        raise StoreError(f"{what}: a descriptor is not a JSON object")
    media_type, digest, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
    if not isinstance(media_type, str) or not media_type or len(media_type) > 255:
        raise StoreError(f"{what}: descriptor without a valid mediaType")
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise StoreError(f"{what}: descriptor with a missing or unsupported digest")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise StoreError(f"{what}: descriptor {digest} without a valid size")
    anns = obj.get("annotations")
    if anns is None:
        anns = {}
    if not isinstance(anns, dict) or not all(isinstance(v, str) for v in anns.values()):
        raise StoreError(f"{what}: descriptor {digest} has annotations that are not strings")
    art = obj.get("artifactType")
    if art is not None and not isinstance(art, str):
        raise StoreError(f"{what}: descriptor {digest} has a non-string artifactType")
    return Descriptor(media_type, digest, size, {str(k): v for k, v in anns.items()}, art)


def parse_tag_list(data: bytes, what: str) -> list[str]:
    """The ``tags`` of a ``tags/list`` answer."""
    doc = loads_json(data, what)
    if not isinstance(doc, dict):
        raise StoreError(f"{what} is not a JSON object")
    tags = doc.get("tags")
    if tags is None:
        return []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise StoreError(f"{what}: 'tags' is not a list of strings")
    return list(tags)


def parse_index(data: bytes, what: str) -> tuple[list[Descriptor], int]:
    """(descriptors, number of unreadable entries skipped) of an image index.

    An entry with missing or mistyped fields is skipped, not fatal: it could not be fetched
    anyway, and one hostile entry must not hide the others.
    """
    doc = loads_json(data, what)
    if not isinstance(doc, dict):
        raise StoreError(f"{what} is not a JSON object")
    manifests = doc.get("manifests")
    if manifests is None:
        return [], 0
    if not isinstance(manifests, list):
        raise StoreError(f"{what}: 'manifests' is not a list")
    out: list[Descriptor] = []
    skipped = 0
    for m in manifests:
        try:
            out.append(parse_descriptor(m, what))
        except StoreError:
            skipped += 1
    return out, skipped


def parse_error_body(data: bytes) -> tuple[list[str], str]:
    """(error codes, readable message) of an OCI error body; never raises."""
    try:
        body = loads_json(data[:MAX_ERROR_BYTES], "error body")
    except StoreError:
        return [], ""
    errs = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errs, list):
        return [], ""
    codes: list[str] = []
    msgs: list[str] = []
    for e in errs[:20]:
        if not isinstance(e, dict):
            continue
        code = e.get("code")
        if isinstance(code, str):
            codes.append(code[:100])
        m = e.get("message") or code or ""
        text = m if isinstance(m, str) else ""
        detail = e.get("detail")
        if isinstance(detail, (str, int, float)) and not isinstance(detail, bool) and detail:
            text += f" ({detail})"
        if text:
            msgs.append(text[:300])
    return codes, "; ".join(msgs)




def check_manifest(doc: dict[str, Any], what: str) -> None:
    """Refuse a manifest whose descriptors (``config``, ``layers``, ``subject``) or
    annotations have missing or mistyped fields, before anything above the store reads it.
    An index's ``manifests`` must be a list; its entries are judged by who reads them."""
    config = doc.get("config", ...)
    if config is not ...:
        parse_descriptor(config, f"{what} (config)")
    subject = doc.get("subject")
    if subject is not None:
        parse_descriptor(subject, f"{what} (subject)")
    layers = doc.get("layers")
    if layers is not None:
        if not isinstance(layers, list):
            raise StoreError(f"{what}: 'layers' is not a list")
        for i, layer in enumerate(layers):
            parse_descriptor(layer, f"{what} (layer {i})")
    manifests = doc.get("manifests")
    if manifests is not None and not isinstance(manifests, list):
        raise StoreError(f"{what}: 'manifests' is not a list")
    anns = doc.get("annotations")
    if anns is not None and (not isinstance(anns, dict)
                             or not all(isinstance(v, str) for v in anns.values())):
        raise StoreError(f"{what}: annotations that are not strings")
    art = doc.get("artifactType")
    if art is not None and not isinstance(art, str):
        raise StoreError(f"{what}: a non-string artifactType")
