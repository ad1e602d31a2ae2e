"""Attach artifacts to a model manifest as OCI referrers, and find them again.

Every referrer manifest carries ``subject`` (OCI 1.1) and gets **its own tag**,
``sha256-<subject hex>-<first 32 hex of the referrer digest>``. Tag writes are independent, so
any number of CI jobs can attach at once and nothing is lost; tagged manifests also survive
``registry garbage-collect --delete-untagged``. Where the registry has no referrers API, the
OCI 1.1 fallback index at tag ``sha256-<subject hex>`` is kept up to date for other tools
(oras, cosign) as a cache: read-modify-write, re-read after writing, merge what a concurrent
writer dropped, drop entries whose manifest is gone (distribution 2.8 refuses an index
naming a deleted manifest). Discovery reads the referrers API or the index, plus the
per-referrer tags, so an entry a racing index update lost is still found.

The fallback index stays within registries' manifest size limit (``MAX_INDEX_BYTES``, under
distribution's 4 MiB). While every entry fits with all its manifest's annotations, it holds
them so. Past that, modelseal's own entries (those with a per-referrer tag) are **abridged**
to what discovery filters and sorts on (``SLIM_ANNOTATIONS``: the predicate type and the
creation time; the rest is in their manifests), so about 11,000 fit instead of 7,800. When
even those do not all fit it holds every entry of other tools and the newest of modelseal's
own (by ``org.opencontainers.image.created``), and says so in its annotation
``dev.modelseal.referrers.truncated``. Discovery stays complete through the per-referrer tags.
The index is a cache: failing to update it never fails an attach (``Attached.indexed``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from modelseal._util.json import canonical_json
from modelseal._util.time import created_time, rfc3339
from modelseal.digest import sha256_bytes
from modelseal.errors import InputError, NotFoundError, RegistryTimeoutError, StoreError
from modelseal.formats import (
    ANN_BLOB,
    ANN_CREATED,
    ANN_PREDICATE_TYPE,
    ANN_TRUNCATED,
    EMPTY_JSON,
    EMPTY_V1,
    INDEX_V1,
    MANIFEST_V1,
)
from modelseal.oci.image_layout import LayoutStore
from modelseal.oci.parse import loads_json, parse_descriptor, parse_index
from modelseal.oci.store import Descriptor, Store

TAG_DIGEST_CHARS = 32
"""Annotation naming the referrer's single layer, so a reader that trusts only the content
(a verifier checking signatures and Statement subjects) can fetch it in one request."""
INDEX_MERGE_ROUNDS = 8
MAX_INDEX_BYTES = 4_000_000
"""Largest fallback index written: distribution refuses manifests over 4 MiB (4,194,304
bytes), as do most registries; ~7,800 referrers with all of modelseal's annotations fit
(~509 bytes each), ~11,000 abridged (~360 bytes each, ``SLIM_ANNOTATIONS``)."""
SLIM_ANNOTATIONS = (ANN_CREATED, ANN_PREDICATE_TYPE)
"""What an abridged entry of modelseal's keeps: what discovery sorts by (creation time) and
what a verifier filters on without fetching (the claimed predicate type). The rest (the
bundle's blob digest, its content kind, any other annotation) is read from the manifest."""


def fallback_tag(subject_digest: str) -> str:
    """The OCI 1.1 referrers tag schema: ``sha256-<hex>``."""
    algo, _, hexd = subject_digest.partition(":")
    return f"{algo}-{hexd}"


def _short(digest: str) -> str:
    return digest.partition(":")[2][:TAG_DIGEST_CHARS]


def referrer_tag(subject_digest: str, referrer_digest: str) -> str:
    """The tag that keeps one referrer alive and discoverable."""
    return f"{fallback_tag(subject_digest)}-{_short(referrer_digest)}"


@dataclass(frozen=True)
class Attached:
    descriptor: Descriptor  # of the referrer manifest
    tag: str
    indexed: bool = True  # listed in the fallback index (False: found through its tag only)


def attach(store: Store, subject: Descriptor, *, artifact_type: str, blob: bytes,
           blob_media_type: str, annotations: Mapping[str, str] | None = None,
           update_index: bool = True) -> Attached:
    """Push ``blob`` as a referrer of ``subject``; idempotent for identical content."""
    blob_digest = store.put_blob_bytes(blob)
    store.put_blob_bytes(EMPTY_JSON)
    anns = {ANN_CREATED: rfc3339(created_time()), ANN_BLOB: blob_digest, **(annotations or {})}
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_V1,
        "artifactType": artifact_type,
        "config": {"mediaType": EMPTY_V1, "digest": sha256_bytes(EMPTY_JSON), "size": 2},
        "layers": [Descriptor(blob_media_type, blob_digest, len(blob)).to_dict()],
        "subject": subject.to_dict(),
        "annotations": anns,
    }
    raw = canonical_json(manifest)
    digest = sha256_bytes(raw)
    tag = referrer_tag(subject.digest, digest)
    store.put_manifest(raw, MANIFEST_V1, tag)
    desc = Descriptor(MANIFEST_V1, digest, len(raw), dict(anns), artifact_type)
    indexed = True
    if update_index and store.referrers_api(subject.digest) is None:
        try:
            indexed = _add_to_index(store, subject.digest, desc)
        except RegistryTimeoutError:
            raise
        except StoreError:
            # The referrer is stored and tagged (discoverable); the index is only a cache
            # for other tools. A registry refusing it must not fail the attach.
            indexed = False
    return Attached(desc, tag, indexed)


def _read_index(store: Store, subject_digest: str, *, strict: bool = False) -> list[Descriptor]:
    """The fallback index's entries (unreadable entries skipped). An unreadable index counts
    as empty unless ``strict``: discovery goes on through the tags, attach rewrites it."""
    tag = fallback_tag(subject_digest)
    try:
        raw, _, _ = store.get_manifest(tag)
        return parse_index(raw, f"referrers index {tag} in {store.describe()}")[0]
    except NotFoundError:
        return []
    except StoreError:
        if strict:
            raise
        return []


def _is_ours(d: Descriptor, tagged: Collection[str]) -> bool:
    """One of modelseal's referrers: it names its blob (a full entry), or it has a per-referrer
    tag (``tagged``: the tags' referrer parts; an abridged entry names no blob)."""
    return ANN_BLOB in d.annotations or _short(d.digest) in tagged


def _index_order(d: Descriptor, tagged: Collection[str]) -> tuple[int, str, str]:
    """Sort key, most worth keeping first: other tools' entries (found only here), then
    modelseal's newest (also found through their tags)."""
    ours = 1 if _is_ours(d, tagged) else 0
    created = d.annotations.get(ANN_CREATED, "")
    # newest first: invert the timestamp's characters for an ascending sort
    return (ours, "".join(chr(0x10FFFF - ord(c)) for c in created), d.digest)


def _slim(d: Descriptor) -> Descriptor:
    """``d`` abridged to ``SLIM_ANNOTATIONS``."""
    anns = {k: d.annotations[k] for k in SLIM_ANNOTATIONS if k in d.annotations}
    return Descriptor(d.media_type, d.digest, d.size, anns, d.artifact_type)


def fit_index(entries: list[Descriptor], max_bytes: int | None = None,
              tagged: Collection[str] = ()) -> tuple[list[Descriptor], bool]:
    """(entries that fit in one index of at most ``max_bytes``, whether some were left out);
    deterministic, so concurrent writers agree on what the full index holds.

    Every entry as given while all fit; else modelseal's own (``tagged``: the referrer parts
    of the per-referrer tags) abridged to ``SLIM_ANNOTATIONS``, and of those the newest that
    fit. Other tools' entries are never abridged: the index is the only place they are
    listed."""
    limit = MAX_INDEX_BYTES if max_bytes is None else max_bytes
    unique = list({d.digest: d for d in entries}.values())
    overhead = len(_index_bytes([], True))
    sizes = [len(canonical_json(d.to_dict())) + 1 for d in unique]
    if overhead + sum(sizes) <= limit:
        kept = unique
    else:
        ranked = sorted((_slim(d) if _is_ours(d, tagged) else d for d in unique),
                        key=lambda d: _index_order(d, tagged))
        size, kept = overhead, []
        for d in ranked:
            n = len(canonical_json(d.to_dict())) + 1
            if size + n > limit:
                break
            size += n
            kept.append(d)
    kept.sort(key=lambda d: (d.annotations.get(ANN_CREATED, ""), d.digest))
    return kept, len(kept) < len(unique)


def _index_bytes(entries: list[Descriptor], truncated: bool) -> bytes:
    index: dict[str, object] = {"schemaVersion": 2, "mediaType": INDEX_V1,
                                "manifests": [d.to_dict() for d in entries]}
    if truncated:
        index["annotations"] = {ANN_TRUNCATED: "true"}
    return canonical_json(index)


def _add_to_index(store: Store, subject_digest: str, desc: Descriptor) -> bool:
    """True when the fallback index lists ``desc`` (False: the full index left it out)."""
    return desc.digest in add_to_index(store, subject_digest, [desc])


def _live(store: Store, subject_digest: str, entries: list[Descriptor],
          known: dict[str, bool], tagged: set[str]) -> set[str]:
    """The digests of ``entries`` whose manifest still exists, judged as :func:`list_referrers`
    does: one with a per-referrer tag lives (``tagged``, filled here from one tag listing, read
    after the index, so a concurrent writer's tag is already there); one of modelseal's full
    entries (``dev.modelseal.referrer.blob``) without its tag is gone; any other (another
    tool's, which has no tag, or an abridged one whose tag is gone) by a lookup of its digest
    (remembered in ``known``).

    Distribution refuses (400 "blob unknown") an index listing a manifest it no longer has, so
    one deleted referrer left in the index would keep every later one out of it."""
    if any(d.digest not in known for d in entries):
        prefix = fallback_tag(subject_digest) + "-"
        tagged.update(t[len(prefix):] for t in store.list_tags() if t.startswith(prefix))
        for d in entries:
            if d.digest in known:
                continue
            if _short(d.digest) in tagged:
                known[d.digest] = True
            elif ANN_BLOB in d.annotations:
                known[d.digest] = False
    foreign = list({d.digest for d in entries if d.digest not in known})

    def exists(digest: str) -> bool:
        try:
            return store.resolve(digest) == digest
        except NotFoundError:
            return False

    if foreign:
        if isinstance(store, LayoutStore) or len(foreign) == 1:
            alive = list(map(exists, foreign))
        else:
            with ThreadPoolExecutor(max_workers=min(8, len(foreign))) as ex:
                alive = list(ex.map(exists, foreign))
        known.update(zip(foreign, alive, strict=True))
    return {d.digest for d in entries if known.get(d.digest)}


def add_to_index(store: Store, subject_digest: str, new: list[Descriptor]) -> set[str]:
    """Add ``new`` (stored, tagged referrers of ``subject_digest``) to its OCI 1.1 fallback
    index: read-modify-write, re-read afterwards and merge what a concurrent writer dropped.
    Entries whose manifest is gone are dropped. Returns the digests of ``new`` the index lists
    (a full index leaves the oldest of modelseal's own out)."""
    wanted = {d.digest: d for d in new}
    known = {d.digest: True for d in new}  # just written by the caller
    tagged: set[str] = {_short(d.digest) for d in new}
    for _ in range(INDEX_MERGE_ROUNDS):
        current = _read_index(store, subject_digest)
        merged = {d.digest: d for d in current}
        for k, d in wanted.items():
            merged.setdefault(k, d)
        alive = _live(store, subject_digest, list(merged.values()), known, tagged)
        kept, truncated = fit_index([d for d in merged.values() if d.digest in alive],
                                    tagged=tagged)
        keep = {d.digest for d in kept}
        if {d.digest for d in current} == keep:
            return {d.digest for d in new} & keep
        # Entries other writers added but that are gone now come back from their tags later.
        wanted.update((k, d) for k, d in merged.items() if k in alive)
        store.put_manifest(_index_bytes(kept, truncated), INDEX_V1,
                           fallback_tag(subject_digest))
    return set()


def list_referrers(store: Store, subject_digest: str, artifact_type: str | None = None,
                   workers: int = 8) -> list[Descriptor]:
    """Every referrer of ``subject_digest``: from the API or fallback index, plus the tags."""
    found: dict[str, Descriptor] = {}
    prefix = fallback_tag(subject_digest) + "-"
    tagged = {t[len(prefix):] for t in store.list_tags() if t.startswith(prefix)}
    api = store.referrers_api(subject_digest)
    if api is not None:
        found = {d.digest: d for d in api}
    else:
        for d in _read_index(store, subject_digest):
            if ANN_BLOB in d.annotations and _short(d.digest) not in tagged:
                continue  # one of ours whose tag is gone: deleted; the index is only a cache
            found[d.digest] = d
    known_prefixes = {_short(d.digest) for d in found.values()}
    missing = [prefix + t for t in sorted(tagged - known_prefixes)]

    def describe(tag: str) -> Descriptor | None:
        try:
            raw, media_type, digest = store.get_manifest(tag)
        except NotFoundError:
            return None
        try:
            doc = _manifest_doc(store, raw, digest)
        except (StoreError, InputError):
            return None  # malformed: not a referrer modelseal can use
        if _subject_digest(doc) != subject_digest:
            return None  # a tag that only looks like ours
        anns = doc.get("annotations")
        art = doc.get("artifactType")
        return Descriptor(media_type, digest, len(raw),
                          {str(k): str(v) for k, v in anns.items()}
                          if isinstance(anns, dict) else {},
                          art if isinstance(art, str) else None)

    if missing:
        with ThreadPoolExecutor(max_workers=workers) as ex:
            # A local directory answers in microseconds: threads would only add GIL hand-offs
            # (2 s of 3 for 10,000 referrer tags); a registry needs them for its round trips.
            local = isinstance(store, LayoutStore)
            for maybe in (map(describe, missing) if local else ex.map(describe, missing)):
                if maybe is not None:
                    found[maybe.digest] = maybe
    out = list(found.values())
    if artifact_type:
        out = [d for d in out if d.artifact_type == artifact_type]
    return sorted(out, key=lambda d: (d.annotations.get(ANN_CREATED, ""), d.digest))


def fetch_referrer_blob(store: Store, referrer: Descriptor,
                        subject_digest: str | None = None) -> tuple[bytes, dict[str, object]]:
    """The single layer of a referrer manifest (checked against its digest) and the manifest.

    With ``subject_digest``, refuses a manifest whose subject is another artifact.
    """
    raw, _, digest = store.get_manifest(referrer.digest)
    doc = _manifest_doc(store, raw, digest)  # parsed once (10,000 referrers: 10,000 parses)
    return _layer_of(store, doc, digest, subject_digest), doc


def fetch_referrer_content(store: Store, referrer: Descriptor) -> bytes:
    """The referrer's single layer in one request when its descriptor names it (annotation
    ``dev.modelseal.referrer.blob``), else through its manifest.

    Only for readers that judge the content itself (signature and Statement subjects): the
    annotation and the manifest's ``subject`` are not signed, so they decide nothing anyway.
    """
    blob = referrer.annotations.get(ANN_BLOB)
    if blob and blob.startswith("sha256:"):
        return store.get_blob_bytes(blob, max_size=32 << 20)
    raw, _, digest = store.get_manifest(referrer.digest)
    return _layer_of(store, _manifest_doc(store, raw, digest), digest, None)


def _manifest_doc(store: Store, raw: bytes, digest: str) -> dict[str, object]:
    doc = loads_json(raw, f"referrer manifest {digest} in {store.describe()}")
    if not isinstance(doc, dict):
        raise StoreError(f"referrer manifest {digest} in {store.describe()} is not a JSON "
                         "object")
    return doc


def _subject_digest(doc: Mapping[str, object]) -> str | None:
    subject = doc.get("subject")
    got = subject.get("digest") if isinstance(subject, dict) else None
    return got if isinstance(got, str) else None


def _layer_of(store: Store, doc: Mapping[str, object], digest: str,
              subject_digest: str | None) -> bytes:
    if subject_digest is not None and _subject_digest(doc) != subject_digest:
        raise StoreError(f"referrer {digest} in {store.describe()} is about "
                         f"{_subject_digest(doc)}, not {subject_digest}")
    layers = doc.get("layers")
    if not isinstance(layers, list) or len(layers) != 1:
        n = len(layers) if isinstance(layers, list) else 0
        raise StoreError(f"referrer {digest} has {n} layers; expected exactly one")
    layer = parse_descriptor(layers[0], f"referrer {digest} in {store.describe()}")
    return store.get_blob_bytes(layer.digest, max_size=32 << 20)
