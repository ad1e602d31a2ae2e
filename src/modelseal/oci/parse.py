"""Parsers of what a registry (or an image-layout directory) answers, written for hostile
input: bounded JSON nesting (counted without recursion, so never a RecursionError), every
descriptor field checked for presence and type, errors as StoreError with a clear message.
Pure functions on bytes, fuzzed in tests/test_faults.py. JSON goes through the one bounded
reader (``modelseal._util.json``) and descriptors through ``Descriptor.from_dict``.
"""

from __future__ import annotations

from typing import Any

from modelseal._util.json import loads
from modelseal.errors import InputError, StoreError
from modelseal.oci.store import Descriptor
from modelseal.refs import DIGEST_RE

MAX_JSON_DEPTH = 32  # OCI documents nest 4 levels; anything deeper is hostile
MAX_ERROR_BYTES = 64 * 1024  # an error body: only its first codes and messages matter

def loads_json(data: bytes, what: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse a registry's JSON answer with the one bounded reader (``_util.json``); StoreError
    (never RecursionError) when it is not JSON or nests deeper than ``max_depth``."""
    return loads(data, what=what, max_depth=max_depth, error=StoreError)


def parse_descriptor(obj: Any, what: str) -> Descriptor:
    """A descriptor from a registry answer: ``Descriptor.from_dict``'s checks of every field,
    and a sha256 digest (the only algorithm modelseal fetches by)."""
    try:
        d = Descriptor.from_dict(obj, what)
    except InputError as e:
        raise StoreError(e.message) from e
    if not DIGEST_RE.match(d.digest):
        raise StoreError(f"{what}: descriptor with an unsupported digest {d.digest[:80]!r}")
    return d


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
