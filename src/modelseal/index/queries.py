"""Lineage and search over the index. Every answer carries what it rests on: whether the
attestation verified (and why not), which attestation, who signed, when, and the model's
stage with its basis. Results are sorted so that any engine gives the same answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, and_, or_, select

from modelseal.errors import NotFoundError, UsageError
from modelseal.index.schema import attestations, dependencies, models, stage_events, tags


def _tags_of(conn: Any, repo: str, digest: str) -> list[str]:
    return sorted(conn.execute(select(tags.c.tag).where(
        tags.c.repo == repo, tags.c.digest == digest)).scalars())


def _tags_for(conn: Any, pairs: set[tuple[str, str]]) -> dict[tuple[str, str], list[str]]:
    """(repo, digest) -> its tags, in one query per repository."""
    out: dict[tuple[str, str], list[str]] = {p: [] for p in pairs}
    by_repo: dict[str, set[str]] = {}
    for repo, digest in pairs:
        by_repo.setdefault(repo, set()).add(digest)
    for repo, ds in by_repo.items():
        for r in conn.execute(select(tags.c.digest, tags.c.tag).where(
                tags.c.repo == repo, tags.c.digest.in_(sorted(ds)))):
            out[(repo, r.digest)].append(r.tag)
    for v in out.values():
        v.sort()
    return out


def _model_dict(conn: Any, m: Any, tag_list: list[str] | None = None) -> dict[str, Any]:
    return {"repo": m.repo, "digest": m.digest, "name": m.name, "version": m.version,
            "tags": _tags_of(conn, m.repo, m.digest) if tag_list is None else tag_list,
            "stage": m.stage, "status": m.status, "stageBasis": m.stage_basis}


def _dataset_filter(query: str) -> Any:
    d = dependencies.c
    if query.startswith("sha256:"):
        return d.digest == query.lower()
    return or_(d.name == query, d.uri == query)


def lineage_dataset(engine: Engine, query: str, *, verified_only: bool = False
                    ) -> dict[str, Any]:
    """Models trained or evaluated on the dataset named by digest, name or URI, with the step,
    signer, time, current stage and whether the evidence verified."""
    d, a, m = dependencies.c, attestations.c, models.c
    cond = [d.kind == "dataset", _dataset_filter(query)]
    if verified_only:
        cond.append(a.verified.is_(True))
    q = (select(d.repo, d.model_digest, d.role, d.digest, d.scheme, d.name, d.uri,
                d.attestation, a.predicate_type, a.verified, a.reason, a.signer, a.step, a.time,
                a.time_source, m.name.label("model_name"), m.version, m.stage, m.status,
                m.stage_basis)
         .join(attestations, and_(a.repo == d.repo, a.model_digest == d.model_digest,
                                  a.attestation == d.attestation))
         .join(models, and_(m.repo == d.repo, m.digest == d.model_digest))
         .where(*cond))
    out: list[dict[str, Any]] = []
    names: set[str] = set()
    digests: set[str] = set()
    with engine.connect() as conn:
        found = list(conn.execute(q))
        tag_map = _tags_for(conn, {(r.repo, r.model_digest) for r in found})
        for r in found:
            if r.name:
                names.add(r.name)
            if r.digest:
                digests.add(f"{r.digest} ({r.scheme})" if r.scheme else r.digest)
            out.append({
                "model": {"repo": r.repo, "digest": r.model_digest, "name": r.model_name,
                          "version": r.version, "tags": tag_map[(r.repo, r.model_digest)],
                          "stage": r.stage, "status": r.status, "stageBasis": r.stage_basis},
                "role": r.role, "step": r.step, "signer": r.signer, "time": r.time,
                "timeSource": r.time_source, "verified": bool(r.verified),
                "reason": r.reason, "attestation": r.attestation,
                "predicateType": r.predicate_type,
                "dataset": {"digest": r.digest, "scheme": r.scheme, "name": r.name,
                            "uri": r.uri}})
    out.sort(key=lambda x: (x["model"]["repo"], x["model"]["digest"], x["role"],
                            x["attestation"], x["dataset"]["digest"] or "",
                            x["dataset"]["name"] or ""))
    return {"dataset": query, "names": sorted(names), "digests": sorted(digests),
            "models": out,
            "verified": sum(1 for x in out if x["verified"]),
            "unverified": sum(1 for x in out if not x["verified"])}


def resolve_model(engine: Engine, ref: str) -> list[Any]:
    """Index rows of the model ``ref`` names: ``sha256:...``, ``REPO:TAG``, ``REPO@DIGEST``,
    ``oci:DIR:TAG``. NotFoundError when the index does not know it."""
    from modelseal.index.crawler import repo_key
    from modelseal.refs import parse_ref

    m = models.c
    with engine.connect() as conn:
        if ref.startswith("sha256:"):
            rows = list(conn.execute(select(models).where(m.digest == ref)))
        else:
            r = parse_ref(ref, default_tag="latest")
            repo = repo_key(r)
            digest = r.digest or conn.execute(select(tags.c.digest).where(
                tags.c.repo == repo, tags.c.tag == r.tag)).scalar()
            rows = list(conn.execute(select(models).where(m.repo == repo, m.digest == digest)))
    if not rows:
        raise NotFoundError(f"{ref} is not in the index (run `modelseal index` on its "
                            "repository first)")
    return sorted(rows, key=lambda x: (x.repo, x.digest))


def lineage_model(engine: Engine, ref: str) -> dict[str, Any]:
    """A model's datasets, code, base models, signers and stage history, and the models whose
    provenance names it as their base model."""
    found = resolve_model(engine, ref)
    d, a = dependencies.c, attestations.c
    results = []
    with engine.connect() as conn:
        for mrow in found:
            deps = conn.execute(
                select(d.kind, d.role, d.digest, d.scheme, d.name, d.uri, d.attestation,
                       a.verified, a.reason, a.signer, a.step, a.time)
                .join(attestations, and_(a.repo == d.repo, a.model_digest == d.model_digest,
                                         a.attestation == d.attestation))
                .where(d.repo == mrow.repo, d.model_digest == mrow.digest))
            by_kind: dict[str, list[dict[str, Any]]] = {
                "dataset": [], "code": [], "base-model": [], "other": []}
            for r in deps:
                by_kind.setdefault(r.kind, []).append({
                    "role": r.role, "digest": r.digest, "scheme": r.scheme, "name": r.name,
                    "uri": r.uri, "attestation": r.attestation, "verified": bool(r.verified),
                    "reason": r.reason, "signer": r.signer, "step": r.step, "time": r.time})
            for v in by_kind.values():
                v.sort(key=lambda x: (x["role"], x["digest"] or "", x["name"] or "",
                                      x["attestation"]))
            atts = [{"attestation": r.attestation, "predicateType": r.predicate_type,
                     "verified": bool(r.verified), "reason": r.reason, "signer": r.signer,
                     "step": r.step, "time": r.time, "timeSource": r.time_source}
                    for r in conn.execute(select(attestations).where(
                        a.repo == mrow.repo, a.model_digest == mrow.digest)
                        .order_by(a.attestation))]
            signers: dict[str, set[str]] = {}
            for x in atts:
                if x["verified"] and x["signer"]:
                    signers.setdefault(x["signer"], set()).update(
                        (x["step"] or "").split(",") if x["step"] else [])
            history = [{"sequence": r.sequence, "action": r.action, "stage": r.stage,
                        "time": r.time, "signers": r.signers.split(",") if r.signers else [],
                        "record": r.record}
                       for r in conn.execute(select(stage_events).where(
                           stage_events.c.repo == mrow.repo,
                           stage_events.c.model_digest == mrow.digest)
                           .order_by(stage_events.c.sequence))]
            derived_q = (select(d.repo, d.model_digest, d.attestation, a.verified, a.signer,
                                a.time, models.c.name, models.c.version)
                         .join(attestations, and_(a.repo == d.repo,
                                                  a.model_digest == d.model_digest,
                                                  a.attestation == d.attestation))
                         .join(models, and_(models.c.repo == d.repo,
                                            models.c.digest == d.model_digest))
                         .where(d.kind == "base-model", d.digest == mrow.digest))
            rows = list(conn.execute(derived_q))
            tag_map = _tags_for(conn, {(r.repo, r.model_digest) for r in rows})
            derived = sorted(
                ({"repo": r.repo, "digest": r.model_digest, "name": r.name,
                  "version": r.version, "tags": tag_map[(r.repo, r.model_digest)],
                  "attestation": r.attestation, "verified": bool(r.verified),
                  "signer": r.signer, "time": r.time} for r in rows),
                key=lambda x: (x["repo"], x["digest"], x["attestation"]))
            results.append({
                "model": _model_dict(conn, mrow),
                "datasets": by_kind["dataset"], "code": by_kind["code"],
                "baseModels": by_kind["base-model"], "other": by_kind["other"],
                "signers": [{"signer": s, "steps": sorted(x for x in st if x)}
                            for s, st in sorted(signers.items())],
                "stageHistory": history, "attestations": atts, "derived": derived})
    return {"ref": ref, "results": results}


def search(engine: Engine, *, name: str | None = None, stage: str | None = None,
           signer: str | None = None, predicate_type: str | None = None,
           since: str | None = None, until: str | None = None,
           verified_only: bool = True, limit: int = 1000) -> list[dict[str, Any]]:
    """Models matching every filter given. Signer, predicate type and time range match
    attestations (verified ones unless ``verified_only`` is False); times are ISO 8601 UTC."""
    for t in (since, until):
        if t is not None and not (len(t) >= 10 and t[4] == "-" and t[7] == "-"):
            raise UsageError(f"time {t!r} is not ISO 8601 (YYYY-MM-DD[THH:MM:SSZ])")
    m, a = models.c, attestations.c
    cond: list[Any] = [m.artifact_type == "application/vnd.cncf.model.manifest.v1+json"]
    if name:
        cond.append(m.name.like(name.replace("*", "%")))
    if stage:
        cond.append(m.stage == stage)
    att_cond: list[Any] = []
    if signer:
        att_cond.append(a.signer == signer)
    if predicate_type:
        att_cond.append(a.predicate_type == predicate_type)
    if since:
        att_cond.append(a.time >= since)
    if until:
        att_cond.append(a.time <= until)
    if att_cond:
        if verified_only:
            att_cond.append(a.verified.is_(True))
        cond.append(select(a.attestation).where(
            a.repo == m.repo, a.model_digest == m.digest, *att_cond).exists())
    q = select(models).where(*cond).order_by(m.repo, m.digest).limit(limit)
    with engine.connect() as conn:
        rows = list(conn.execute(q))
        tag_map = _tags_for(conn, {(r.repo, r.digest) for r in rows})
        return [_model_dict(conn, r, tag_map[(r.repo, r.digest)]) for r in rows]


def every_answer(engine: Engine, datasets: Sequence[str], model_refs: Sequence[str]
                 ) -> dict[str, Any]:
    """Every lineage answer for the given datasets and models (rebuild comparisons)."""
    return {"datasets": {q: lineage_dataset(engine, q) for q in datasets},
            "models": {r: lineage_model(engine, r) for r in model_refs},
            "search": search(engine, verified_only=False)}
