#!/usr/bin/env python3
"""The evidence index at scale: build, incremental re-index, lineage queries, on SQLite and
PostgreSQL.

    PYTHONPATH=src python3 benchmarks/bench_lineage.py [--n 10000] [--root /tmp/modelseal-bench]
                                                       [--engines sqlite,postgresql]
                                                       [--queries 200]

Generates once, in ``oci:ROOT/lineage-N``, N model versions (20 families, each version
fine-tuned from the previous one) with real signed attestations: SLSA provenance by the
trainer (1-2 of 100 datasets, the base model, the code commit), a test-result by the evaluator
(one dataset), and every tenth version promoted to staging by a release manager (the real
``lifecycle.service.transition``). Writing goes through ``LayoutStore`` with ``index.json``
kept in memory and written once at the end (the real store rewrites it on every tag: fine for
a CI job, quadratic for 10,000 models x 4 tags); blobs and manifests are what ``push`` and
``attach`` write.

Then, per engine (PostgreSQL: Debian's, started on 127.0.0.1 by ``tests/postgres_server.py``):

- ``modelseal index oci:... --policy ... --json`` on an empty database (its own process):
  build time, database size;
- the same again, nothing changed (target: under 10 s);
- lineage queries in one process (library calls, the CLI's start-up excluded):
  ``lineage_dataset`` for random dataset names and ``lineage_model`` for random versions;
  median and 95th percentile (target: under 100 ms).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))

from modelseal.formats import INDEX_V1  # noqa: E402
from modelseal.oci.image_layout import REF_NAME, LayoutStore  # noqa: E402
from modelseal.oci.store import Descriptor  # noqa: E402


class BatchLayout(LayoutStore):
    """A LayoutStore that keeps its tags in memory until ``flush()`` (bench generation only)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._tagged: dict[str, dict[str, Any]] = {}
        self._tag_digests: dict[str, str] = {}
        self._doc: dict[str, Any] | None = None

    def _index(self) -> tuple[dict[str, Any], dict[str, str]]:
        if self._doc is None:  # built only when asked for (resolving needs only the tags)
            self._doc = {"schemaVersion": 2, "mediaType": INDEX_V1,
                         "manifests": list(self._tagged.values())}
        return self._doc, self._tag_digests

    def put_manifest(self, data: bytes, media_type: str, tag: str | None = None,
                     **_: Any) -> str:
        digest = self.put_blob_bytes(data)
        if tag is not None:
            art = json.loads(data).get("artifactType")
            self._tagged[tag] = Descriptor(media_type, digest, len(data), {REF_NAME: tag},
                                           art).to_dict()
            self._tag_digests[tag] = digest
            self._doc = None
        return digest

    def _atomic_write(self, dest: Path, data: bytes, mode: int = 0o644) -> None:
        # no fsync: generated bench data on a shared machine's disk, rebuilt if lost
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, dest)

    def flush(self) -> None:
        LayoutStore._write_index(self, self._index()[0])


def generate(root: Path, n: int) -> dict[str, Any]:
    """N model versions with their attestations; returns what the queries need."""
    from index_fixtures import build_world_keys, evaluation, provenance
    from modelseal.attest.attachments import attach_bundle, subject_of
    from modelseal.attest.bundle import sign_statement
    from modelseal.attest.statement import resource_descriptor
    from modelseal.index.crawler import PolicyContext
    from modelseal.lifecycle.service import transition
    from modelseal.modelpack import ModelMetadata
    from modelseal.refs import parse_ref
    from modelseal.transfer import push

    done = root / "generated.json"
    if done.exists():
        return dict(json.loads(done.read_text()))
    root.mkdir(parents=True, exist_ok=True)
    keys, policy = build_world_keys(root)
    ctx = PolicyContext.load(policy)
    oci = root / "models"
    store = BatchLayout(oci)
    datasets = [resource_descriptor(f"dataset-{k:03d}", f"{k:064x}",
                                    uri=f"https://data.example/{k}") for k in range(100)]
    src = root / "src"
    src.mkdir(exist_ok=True)
    last: dict[int, str] = {}
    tags = []
    t0 = time.perf_counter()
    for i in range(n):
        fam = i % 20
        tag = f"f{fam:02d}-v{i // 20:04d}"
        d = src / tag
        d.mkdir(exist_ok=True)
        (d / "weights.bin").write_bytes(f"weights {i}".encode())
        (d / "config.json").write_text('{"hidden": 4}')
        ref = parse_ref(f"oci:{oci}:{tag}")
        digest = push(d, store, ref, ModelMetadata({"name": f"family-{fam:02d}",
                                                    "version": tag}), workers=1).digest
        subject = subject_of(store, digest)
        used = [datasets[i % 100]] + ([datasets[(i * 7 + 3) % 100]] if i % 2 else [])
        for st, who in ((provenance(digest, used, base=last.get(fam)), "trainer"),
                        (evaluation(digest, datasets[(i + 1) % 100]), "evaluator")):
            attach_bundle(store, subject, sign_statement(st, keys[who].signer))
        if i % 10 == 0:
            transition(store, ref, action="promote", stage="staging",
                       signer=keys["rm1"].signer, layout=ctx.layout)
        last[fam] = digest
        tags.append(tag)
        if (i + 1) % 1000 == 0:
            print(f"  generated {i + 1}/{n} ({time.perf_counter() - t0:.0f} s)", flush=True)
    store.flush()
    info = {"oci": str(oci), "policy": str(policy), "tags": tags,
            "datasets": [str(x["name"]) for x in datasets],
            "generate_s": round(time.perf_counter() - t0, 1)}
    done.write_text(json.dumps(info))
    return info


def run_index(info: dict[str, Any], db: str) -> tuple[float, dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "modelseal.cli", "index", f"oci:{info['oci']}",
                        "--db", db, "--policy", info["policy"], "--json"],
                       capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"index failed: {r.stderr}")
    return wall, json.loads(r.stdout)


def measure_queries(info: dict[str, Any], db: str, count: int) -> dict[str, float]:
    from modelseal.index.queries import lineage_dataset, lineage_model
    from modelseal.index.schema import connect

    engine = connect(db)
    rnd = random.Random(7)
    out: dict[str, float] = {}
    for what, fn, pool in (
            ("dataset", lambda q: lineage_dataset(engine, q), info["datasets"]),
            ("model", lambda q: lineage_model(engine, f"oci:{info['oci']}:{q}"), info["tags"])):
        fn(pool[0])  # warm the connection pool
        times = []
        for q in (rnd.choice(pool) for _ in range(count)):
            t = time.perf_counter()
            fn(q)
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        out[f"{what}_median_ms"] = round(statistics.median(times), 1)
        out[f"{what}_p95_ms"] = round(times[int(len(times) * 0.95) - 1], 1)
    engine.dispose()
    return out


def db_size(db: str) -> int:
    if db.startswith("sqlite:///"):
        return Path(db[len("sqlite:///"):]).stat().st_size
    import psycopg

    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        return int(row[0]) if row else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--root", type=Path,
                    default=Path(os.environ.get("MODELSEAL_BENCH_DIR", "/tmp/modelseal-bench")))
    ap.add_argument("--engines", default="sqlite,postgresql")
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    root = args.root / f"lineage-{args.n}"
    print(f"generating {args.n} model versions in oci:{root}/models ...", flush=True)
    info = generate(root, args.n)
    print(f"  done ({info['generate_s']} s, reused when present)")
    pg = None
    results = []
    try:
        for engine in args.engines.split(","):
            if engine == "sqlite":
                path = root / "index.sqlite"
                path.unlink(missing_ok=True)
                db = f"sqlite:///{path}"
            else:
                from postgres_server import PostgresServer

                pg = PostgresServer()
                pg.start()
                db = pg.create_database("lineage")
            build, rep = run_index(info, db)
            size = db_size(db)
            again, rep2 = run_index(info, db)
            q = measure_queries(info, db, args.queries)
            row = {"engine": engine, "models": rep["models"], "attestations":
                   rep["attestations"], "verified": rep["verified"],
                   "build_s": round(build, 1), "size_mib": round(size / 2**20, 1),
                   "reindex_unchanged_s": round(again, 2), "refetched": rep2["indexed"], **q}
            results.append(row)
            print(json.dumps(row), flush=True)
    finally:
        if pg is not None:
            pg.stop()
    print()
    print("| engine | models | attestations | build | size | re-index (unchanged) | "
          "lineage --dataset p50/p95 | lineage --model p50/p95 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['engine']} | {r['models']} | {r['attestations']} | {r['build_s']} s | "
              f"{r['size_mib']} MiB | {r['reindex_unchanged_s']} s ({r['refetched']} "
              f"refetched) | {r['dataset_median_ms']}/{r['dataset_p95_ms']} ms | "
              f"{r['model_median_ms']}/{r['model_p95_ms']} ms |")
    missed = [f"{r['engine']}: {what}" for r in results for what, bad in (
        ("re-index over 10 s", r["reindex_unchanged_s"] > 10),
        ("lineage --dataset p95 over 100 ms", r["dataset_p95_ms"] > 100),
        ("lineage --model p95 over 100 ms", r["model_p95_ms"] > 100)) if bad]
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    if missed:
        print("targets missed: " + "; ".join(missed))
        sys.exit(1)


if __name__ == "__main__":
    main()
