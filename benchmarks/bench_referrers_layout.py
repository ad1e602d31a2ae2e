#!/usr/bin/env python3
"""Many referrers in an OCI image-layout directory: ``attestations`` and ``verify``.

    python3 benchmarks/bench_referrers_layout.py [--root /tmp/modelseal-bench]
                                                 [--referrers 10000] [--reps 3]
                                                 [--src SRC_DIR_OF_THE_CODE_TO_TIME]

Builds once, in ``oci:ROOT/referrers-layout``, a small model with the five signed pipeline
links, a signed BOM and enough other signed attestations (predicate
``https://example.com/scan/v1``) to reach ``--referrers``. Every referrer has its own tag
(``sha256-<subject>-<referrer>``, as ``attach`` writes it); the OCI 1.1 fallback index holds
only the first six, as after updates lost to racing writers: the rest are found by their tags,
the path whose cost grew with the number of tags (each tag lookup re-parsed ``index.json``).

Then, each in its own process (``PYTHONPATH=--src``, so the same data can be timed with an
older checkout: ``--src /path/to/old/src``):

- ``modelseal attestations oci:...:v1 --json`` (lists and fetches all of them);
- ``modelseal verify oci:...:v1 --policy policy.yaml --json`` (lists all, fetches the six the
  layout and policy use).

Target: both under 3 s with 10,000 referrers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
REPO = HERE.parent


SCAN = "https://example.com/scan/v1"


def keys_and_model(work: Path) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """(signers, public keys) of the layout owner and the five steps, and a small model
    directory: made under ``work`` once, reused after (shared with bench_referrers_registry)."""
    from bench_verify import STEPS

    from modelseal.attest.signers import keygen, load_public_key, load_signer

    keys = work / "keys"
    keys.mkdir(exist_ok=True)
    names = ["owner", *STEPS]
    for k in names:
        if not (keys / f"{k}.key").exists():
            keygen(keys / k)
    model = work / "model"
    model.mkdir(exist_ok=True)
    if not (model / "weights.bin").exists():
        (model / "weights.bin").write_bytes(os.urandom(4096))
        (model / "config.json").write_text("{}")
    return ({k: load_signer(str(keys / f"{k}.key")) for k in names},
            {k: load_public_key(keys / f"{k}.pub") for k in names}, model)


def attach_pipeline(store: Any, subject: Any, files: dict[str, str],
                    signer: dict[str, Any]) -> list[Any]:
    """The five signed pipeline links and a signed BOM, attached; their descriptors."""
    from bench_verify import pipeline_statements

    from modelseal.attest.attachments import attach_bundle
    from modelseal.attest.bundle import sign_statement
    from modelseal.attest.statement import statement

    descs = [attach_bundle(store, subject, sign_statement(st, signer[step])).descriptor
             for step, st in pipeline_statements(files).items()]
    subjects = [(p, d[7:]) for p, d in files.items()]
    descs.append(attach_bundle(store, subject, sign_statement(
        statement(subjects, "https://cyclonedx.org/bom", {"bomFormat": "CycloneDX"}),
        signer["package"])).descriptor)
    return descs


def attach_scan(store: Any, subject: Any, files: dict[str, str], signer: Any, i: int) -> Any:
    """One more signed attestation (predicate ``SCAN``, run ``i``), tagged, not indexed."""
    from modelseal.attest.bundle import sign_statement
    from modelseal.attest.statement import statement
    from modelseal.formats import BUNDLE_MEDIA_TYPE
    from modelseal.oci.referrers import attach

    b = sign_statement(statement([(p, d[7:]) for p, d in files.items()], SCAN, {"run": i}),
                       signer)
    return attach(store, subject, artifact_type=BUNDLE_MEDIA_TYPE, blob=b,
                  blob_media_type=BUNDLE_MEDIA_TYPE,
                  annotations={"dev.sigstore.bundle.content": "dsse-envelope",
                               "dev.sigstore.bundle.predicateType": SCAN},
                  update_index=False).descriptor


def write_policy(work: Path, signer: dict[str, Any], pub: dict[str, Any]) -> Path:
    """The signed ml-pipeline layout and a policy requiring the BOM; the policy's path."""
    from bench_verify import STEPS

    from modelseal.intoto_layout.authoring import load_template, new_layout, sign_layout

    doc = new_layout(load_template("ml-pipeline"), [(s, pub[s]) for s in STEPS])
    (work / "root.layout.json").write_text(json.dumps(sign_layout(doc, signer["owner"])))
    policy = work / "policy.yaml"
    policy.write_text(f"layout: {work / 'root.layout.json'}\n"
                      f"layout_keys: [{work / 'keys' / 'owner.pub'}]\n"
                      "required_predicates: [https://cyclonedx.org/bom]\n")
    return policy


def build(work: Path, n: int) -> dict[str, str]:
    """The layout, keys, signed layout and policy (reused when already there)."""
    done = work / "done.json"
    if done.exists() and json.loads(done.read_text()).get("n") == n:
        return dict(json.loads(done.read_text())["paths"])
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    from modelseal._util.json import canonical_json
    from modelseal.attest.attachments import subject_of
    from modelseal.formats import INDEX_V1
    from modelseal.modelpack import ModelMetadata
    from modelseal.oci.image_layout import REF_NAME, LayoutStore
    from modelseal.oci.referrers import fallback_tag
    from modelseal.oci.store import Descriptor
    from modelseal.refs import parse_ref
    from modelseal.transfer import push

    class Batched(LayoutStore):
        """Tags written to index.json once at the end (set-up speed only)."""

        def __init__(self, path: Path) -> None:
            super().__init__(path)
            self.pending: list[dict[str, Any]] = []

        def put_manifest(self, data: bytes, media_type: str, tag: str | None = None,
                         **kw: Any) -> str:
            digest = self.put_blob_bytes(data)
            if tag is not None:
                at = json.loads(data).get("artifactType")
                self.pending.append(Descriptor(media_type, digest, len(data), {REF_NAME: tag},
                                               at).to_dict())
            return digest

        def flush(self) -> None:
            with self._locked():
                doc = self._read_index()
                doc["manifests"] += self.pending
                self._write_index(doc)
            self.pending = []

    signer, pub, model = keys_and_model(work)
    layout_dir = work / "layout"
    ref = parse_ref(f"oci:{layout_dir}:v1")
    res = push(model, LayoutStore(layout_dir), ref, ModelMetadata({"name": "many"}))
    files = {la.filepath: la.digest for la in (res.manifest.layers if res.manifest else [])}
    store = Batched(layout_dir)
    subject = subject_of(store, res.digest)
    t0 = time.perf_counter()
    descs = attach_pipeline(store, subject, files, signer)
    for i in range(n - len(descs)):
        attach_scan(store, subject, files, signer["evaluate"], i)
    index = {"schemaVersion": 2, "mediaType": INDEX_V1,
             "manifests": [d.to_dict() for d in descs[:6]]}
    store.put_manifest(canonical_json(index), INDEX_V1, fallback_tag(res.digest))
    store.flush()
    print(f"# set up {n} referrers in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    policy = write_policy(work, signer, pub)
    paths = {"ref": f"oci:{layout_dir}:v1", "policy": str(policy)}
    done.write_text(json.dumps({"n": n, "paths": paths}))
    return paths


def timed(cmd: list[str], src: Path) -> tuple[float, float, str]:
    """(wall s, CPU s of the child: user + system, stdout). CPU time moves less than wall
    time when other work shares the machine."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr[-2000:]}")
    return wall, cpu, p.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--root", type=Path,
                    default=Path(os.environ.get("MODELSEAL_BENCH_DIR", "/tmp/modelseal-bench")))
    ap.add_argument("--referrers", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--src", type=Path, default=REPO / "src",
                    help="the modelseal source tree to time (default: this checkout's)")
    args = ap.parse_args()
    paths = build(args.root / f"referrers-layout-{args.referrers}", args.referrers)
    py = sys.executable
    cmds = {
        "attestations": [py, "-m", "modelseal.cli", "attestations", paths["ref"], "--json"],
        "verify": [py, "-m", "modelseal.cli", "verify", paths["ref"], "--policy",
                   paths["policy"], "--json"],
    }
    print(f"# {args.referrers} referrers in {paths['ref']}; code from {args.src}; "
          f"load average {os.getloadavg()[0]:.1f}")
    ok = True
    for name, cmd in cmds.items():
        walls, cpus = [], []
        for _ in range(args.reps):
            wall, cpu, out = timed(cmd, args.src)
            walls.append(wall)
            cpus.append(cpu)
            doc = json.loads(out)
            if name == "attestations":
                assert len(doc["attestations"]) == args.referrers, len(doc["attestations"])
            else:
                assert doc["verified"] is True and doc["attestations"] == args.referrers, doc
        med = statistics.median(walls)
        ok &= med < 3.0
        print(f"modelseal {name:<13} median {med:7.2f} s  best {min(walls):7.2f} s  "
              f"CPU (median) {statistics.median(cpus):7.2f} s  ({args.reps} runs)")
    print(f"# target: both under 3 s -> {'MET' if ok else 'NOT MET'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
