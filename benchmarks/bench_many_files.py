#!/usr/bin/env python3
"""Very many files: push, pull and verify a 100,000-file model on a local docker-registry.

    python3 benchmarks/bench_many_files.py [--root /tmp/modelseal-bench] [--files 100000]
                                           [--reps 3]

The model (made once under ROOT/many-files/model): FILES small files of 60 to 200 bytes in
directories of 500 (a sharded tokenizer or dataset) plus one 32 MiB weight file, so the packed
artifact has both tar layers and a raw layer (docs/format.md, "Very many files"). Each
measured command runs in its own process, warm page cache, digest cache off:

- ``modelseal push MODEL REG/bench/manyN:v1`` (a new repository each run: nothing skipped);
- ``modelseal pull REF TARGET`` into a new directory (every file checked against the signed
  file list); the pulled tree is compared with the model once, file by file;
- ``modelseal verify REF --policy P``: five link attestations listing every file (written from
  the manifest's files as the pipeline would record them). Such links of 100,000 files are
  about 20 MB each, within the verifier's bounds as shipped: they grow with the model's file
  count (``_util.limits.attestation_bound``: 4 MiB + 512 bytes a file per bundle);
- the part of verification that reads the model: manifest + file list, in-process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from _common import DEFAULT_ROOT, MiB, Result, machine, run_measured, table  # noqa: E402

STEPS = ("prepare-data", "train", "evaluate", "approve", "package")


def make_model(model: Path, files: int) -> None:
    """FILES small files and one 32 MiB weight, once."""
    marker = model.parent / "model.complete"
    if marker.exists() and marker.read_text() == str(files):
        return
    shutil.rmtree(model, ignore_errors=True)
    marker.unlink(missing_ok=True)
    for i in range(files):
        d = model / "shards" / f"{i // 500:04d}"
        if i % 500 == 0:
            d.mkdir(parents=True)
        (d / f"part-{i:06d}.json").write_text(json.dumps({"id": i, "pad": "x" * (i % 140)}))
    (model / "model.safetensors").write_bytes(os.urandom(32 * MiB))
    marker.write_text(str(files))


def modelseal_cmd() -> list[str]:
    return [sys.executable, "-m", "modelseal.cli"]


def tree_digests(root: Path) -> dict[str, str]:
    from modelseal.digest import hash_files

    paths = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): d.sha256
            for p, d in zip(paths, hash_files(paths), strict=True)}


def setup_evidence(work: Path, ref_text: str) -> Path:
    """Five signed links over the model's files, attached; the layout and a policy."""
    from bench_verify import pipeline_statements

    from modelseal.attest.attachments import attach_bundle, subject_of
    from modelseal.attest.bundle import sign_statement
    from modelseal.attest.signers import keygen, load_public_key, load_signer
    from modelseal.intoto_layout.authoring import load_template, new_layout, sign_layout
    from modelseal.oci import open_store
    from modelseal.refs import parse_ref
    from modelseal.transfer import fetch_model_manifest

    keys = work / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    names = ["owner", *STEPS]
    for n in names:
        if not (keys / f"{n}.key").exists():
            keygen(keys / n)
    signer = {n: load_signer(str(keys / f"{n}.key")) for n in names}
    pub = {n: load_public_key(keys / f"{n}.pub") for n in names}
    ref = parse_ref(ref_text)
    store = open_store(ref)
    manifest = fetch_model_manifest(store, ref)
    subject = subject_of(store, manifest.digest)
    for step, st in pipeline_statements(manifest.files).items():
        attach_bundle(store, subject, sign_statement(st, signer[step]))
    doc = new_layout(load_template("ml-pipeline"), [(s, pub[s]) for s in STEPS])
    layout = work / "root.layout.json"
    layout.write_text(json.dumps(sign_layout(doc, signer["owner"])))
    policy = work / "policy.yaml"
    policy.write_text(f"layout: {layout}\nlayout_keys: [{keys / 'owner.pub'}]\n")
    return policy


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    from registry_server import RegistryServer

    work = args.root / "many-files"
    model = work / "model"
    print(f"# {machine()}", file=sys.stderr)
    t0 = time.perf_counter()
    make_model(model, args.files)
    print(f"# model: {args.files:,} small files + 1 x 32 MiB ({time.perf_counter() - t0:.0f} s "
          "to make)", file=sys.stderr)
    tree_digests(model)  # warm the page cache
    reg_dir = work / "registry"
    shutil.rmtree(reg_dir, ignore_errors=True)
    reg_dir.mkdir(parents=True)
    registry = RegistryServer(reg_dir)
    registry.start()
    env = dict(os.environ, MODELSEAL_NO_PROGRESS="1")
    try:
        push = Result("modelseal push", 0)
        for i in range(args.reps):
            ref = f"{registry.host}/bench/many{i}:v1"
            wall, rss, out = run_measured([*modelseal_cmd(), "push", str(model), ref,
                                           "--name", "many", "--no-cache", "--json",
                                           "--insecure"], env=env)
            push.walls.append(wall)
            push.rss_kib.append(rss)
            print(f"# push {i}: {wall:.1f} s, {rss / 1024:.0f} MiB: {out.strip()[:300]}",
                  file=sys.stderr, flush=True)
        ref = f"{registry.host}/bench/many0:v1"
        from modelseal.oci import open_store
        from modelseal.refs import parse_ref

        r = parse_ref(ref)
        raw, _, _ = open_store(r).get_manifest(r.reference)
        layers = json.loads(raw)["layers"]
        shape = (f"manifest {len(raw):,} bytes, {len(layers)} layers "
                 f"({sum(la['mediaType'].endswith('.tar') for la in layers)} tar)")

        pull = Result("modelseal pull", 0)
        same = None
        for i in range(args.reps):
            target = work / f"pulled{i}"
            shutil.rmtree(target, ignore_errors=True)
            wall, rss, _ = run_measured([*modelseal_cmd(), "pull", ref, str(target), "--json",
                                         "--insecure"], env=env)
            pull.walls.append(wall)
            pull.rss_kib.append(rss)
            if same is None:
                same = tree_digests(target) == tree_digests(model)
            print(f"# pull {i}: {wall:.1f} s, {rss / 1024:.0f} MiB, identical: {same}",
                  file=sys.stderr, flush=True)
            shutil.rmtree(target, ignore_errors=True)

        t0 = time.perf_counter()
        policy = setup_evidence(work, ref)
        print(f"# {shape}", file=sys.stderr)
        print(f"# attached five links of {args.files:,} files in "
              f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
        verify = Result("modelseal verify, five links of every file", 0)
        verified = True
        for i in range(args.reps):
            wall, rss, out = run_measured([*modelseal_cmd(), "verify", ref, "--policy",
                                           str(policy), "--json", "--insecure"], env=env)
            verify.walls.append(wall)
            verify.rss_kib.append(rss)
            verdict = json.loads(out or "{}")
            verified &= verdict.get("verified") is True
            print(f"# verify {i}: {wall:.1f} s, {rss / 1024:.0f} MiB: verified "
                  f"{verdict.get('verified')}, refusals {verdict.get('refusals', [])[:2]}",
                  file=sys.stderr, flush=True)
        model_side = Result("manifest + file list (in-process)", 0)
        from modelseal.transfer import fetch_model_manifest

        for _ in range(args.reps):
            t0 = time.perf_counter()
            m = fetch_model_manifest(open_store(r), r)
            model_side.walls.append(time.perf_counter() - t0)
            model_side.rss_kib.append(0)
        assert len(m.files) == args.files + 1
    finally:
        registry.stop()
    print(f"\n{args.files:,} files + 1 x 32 MiB; {shape}; pulled tree identical: {same}\n")
    print(table([push, pull, verify, model_side], with_throughput=False))
    print(f"\nverified (stock bounds, which grow with the model's file count): {verified}")
    return 0 if same and verified else 1


if __name__ == "__main__":
    sys.exit(main())
