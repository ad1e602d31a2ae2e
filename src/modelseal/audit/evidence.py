"""Downloading the evidence for people: bundle files named by step, predicate and signer.

``train.provenance.1a2b3c4d.sigstore.json``: the step (a link's own name; for another
predicate, the step whose link the same key signed, when that is one step), the predicate's
short name, and the signer (the first 8 hex of a key id, or the name part of a Sigstore
identity). Names are what the bundles *claim* (nothing is verified here); the index (``--json``
of ``attestations --download``) maps every file to its referrer digest, predicate type and
claimed signer. Only bundles are written into the directory, so tools can take every file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modelseal._util.fs import atomic_write
from modelseal.audit.report import decode_statement, link_name, short_predicate
from modelseal.formats import LINK_PREDICATE as LINK

_SAFE = re.compile(r"[^A-Za-z0-9_-]+")


def _safe(text: str, limit: int = 40) -> str:
    return _SAFE.sub("-", text).strip("-")[:limit] or "unknown"


def signer_label(signer: str | None) -> str:
    """``1a2b3c4d`` for a key id, ``bob`` for ``bob@example.com|issuer``, else a safe slug."""
    if not signer:
        return "unknown"
    if re.fullmatch(r"[0-9a-f]{16,}", signer):
        return signer[:8]
    ident = signer.split("|", 1)[0]
    if "@" in ident:
        return _safe(ident.split("@", 1)[0])
    return _safe(ident.rstrip("/").rsplit("/", 1)[-1])


def download(infos: Sequence[Any], out: Path) -> list[dict[str, Any]]:
    """Write each fetched bundle (``AttestationInfo`` with ``bundle``) into ``out``; the index
    entries (file, path, digest, predicate type, step, claimed signer, created)."""
    out.mkdir(parents=True, exist_ok=True)
    decoded = [(i, decode_statement(i.bundle) if i.bundle else None) for i in infos]
    steps_by_signer: dict[str, set[str]] = {}
    for info, st in decoded:
        name = link_name(st) if info.predicate_type == LINK else None
        if name:
            steps_by_signer.setdefault(info.signer or "", set()).add(name)
    used: set[str] = set()
    index = []
    for info, st in decoded:
        step = link_name(st) if info.predicate_type == LINK else None
        if not step:
            candidates = steps_by_signer.get(info.signer or "", set())
            step = next(iter(candidates)) if len(candidates) == 1 else "model"
        base = f"{_safe(step)}.{short_predicate(info.predicate_type)}.{signer_label(info.signer)}"
        name, n = f"{base}.sigstore.json", 2
        while name in used:
            name, n = f"{base}.{n}.sigstore.json", n + 1
        used.add(name)
        assert info.bundle is not None
        atomic_write(out / name, info.bundle)
        index.append({"file": name, "path": str(out / name), "digest": info.descriptor.digest,
                      "predicateType": info.predicate_type, "step": step,
                      "signer": info.signer, "created": info.created})
    return index


def show(bundle: bytes) -> dict[str, Any]:
    """A Sigstore bundle decoded for a person (nothing verified): media type, signer as
    claimed (key id, or certificate identity and issuer), transparency-log entries, the
    Statement's type, subjects and predicate."""
    from modelseal.attest.bundle import parse_bundle

    pb = parse_bundle(bundle)
    decoded = decode_statement(bundle)
    st = decoded.to_dict() if decoded is not None else {}
    ident, issuer = pb.certificate_identity()
    return {"bundleDigest": pb.bundle_digest, "mediaType": pb.media_type,
            "payloadType": pb.payload_type, "keyless": pb.keyless,
            "keyid": None if pb.keyless else (pb.signer_hint or None),
            "identity": ident, "issuer": issuer, "tlogEntries": pb.tlog_entries,
            "statementType": st.get("_type"), "predicateType": st.get("predicateType"),
            "subject": st.get("subject") or [], "predicate": st.get("predicate")}


def load_bundle(store: Any, subject_digest: str, what: str) -> bytes:
    """A bundle by referrer digest (or a unique prefix of one) attached to ``subject_digest``,
    or read from the file ``what``."""
    from modelseal.attest.attachments import list_attestations
    from modelseal.errors import InputError, NotFoundError

    p = Path(what)
    if p.is_file():
        try:
            return p.read_bytes()
        except OSError as e:
            raise InputError(f"cannot read {p}: {e.strerror or e}") from e
    key = what if what.startswith("sha256:") else f"sha256:{what}"
    found = [i for i in list_attestations(store, subject_digest)
             if i.descriptor.digest.startswith(key)]
    if len(found) != 1:
        raise NotFoundError(f"{len(found)} attestations of {subject_digest} match {what!r}; "
                            "give a file or a longer digest")
    from modelseal.oci.referrers import fetch_referrer_blob

    return fetch_referrer_blob(store, found[0].descriptor, subject_digest)[0]
