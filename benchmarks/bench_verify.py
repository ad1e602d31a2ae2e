#!/usr/bin/env python3
"""Verification benchmark: ``modelseal verify`` vs ``model_signing verify key``.

    python3 benchmarks/bench_verify.py [--root /tmp/modelseal-bench] [--reps 5]
                                       [--referrers 1000]

On a local docker-registry (started here, storage under ROOT), push the 3 x 1 GiB + 500 x 4 KiB
model, attach five signed link attestations (prepare-data -> train -> evaluate -> approve ->
package, written from the model's digests as the pipeline would record them) and an ML-BOM,
sign the ``ml-pipeline`` layout and write a policy requiring the BOM. Then, each in its own
process, warm page cache, interleaved:

- ``modelseal verify REF --policy policy.yaml --json``: decides from the manifest and the
  referrers; the weights are never fetched. Counted in-process with a store wrapper (every
  store call, and whether any layer blob of the model was requested) and, at the HTTP level,
  from the registry's request log;
- ``model_signing verify key --signature model.sig --public_key KEY MODEL_DIR``: must re-hash
  every file of the model on disk.

Targets: modelseal under 1 s wall, no weight blob fetched; a subject with 1,000 referrers
(five step links, a BOM and 994 other signed attestations) verified under 3 s. Referrers
whose annotated predicate type neither the layout nor the policy uses are not fetched; the
same subject is also verified under a policy that requires those 994 too, so all 1,000 are
fetched (two requests each) and their signatures checked.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from _common import (  # noqa: E402
    DEFAULT_ROOT,
    GiB,
    Result,
    ensure_ec_key,
    ensure_model,
    ensure_venv,
    machine,
    model_files,
    run_measured,
    table,
    warm,
    which_modelseal,
)

STEPS = ("prepare-data", "train", "evaluate", "approve", "package")


class CountingStore:
    """Wraps a Store and counts calls; records every blob digest fetched."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: dict[str, int] = {}
        self.blobs: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def wrapped(*a: Any, **kw: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            if name in ("fetch_blob", "get_blob_bytes"):
                self.blobs.append(str(a[0]))
            return attr(*a, **kw)

        return wrapped


def pipeline_statements(files: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The five link Statements a real run would record, from the model's digests."""
    from modelseal.attest.statement import link_statement

    hexes = [(p, d.partition(":")[2]) for p, d in files.items()]
    raw = [("raw/rows.csv", "11" * 32)]
    data = [("data/train.csv", "22" * 32), ("data/test.csv", "33" * 32)]
    code = [("code/train.py", "44" * 32)]
    model = [(f"model/{p}", d) for p, d in hexes]
    report = [("eval/report.json", "55" * 32)]
    return {
        "prepare-data": link_statement("prepare-data", ["prepare"], raw, data),
        "train": link_statement("train", ["train"], data + code, model),
        "evaluate": link_statement("evaluate", ["eval"], model + data + code, report),
        "approve": link_statement("approve", ["approve"], model + report, []),
        "package": link_statement("package", ["modelseal", "push"], hexes, hexes),
    }


def setup(root: Path, model: Path, registry: Any, extra_referrers: int) -> dict[str, Any]:
    from modelseal._util.json import canonical_json
    from modelseal.attest.attachments import attach_bundle, subject_of
    from modelseal.attest.bundle import sign_statement
    from modelseal.attest.model_signing import sign_model_signing
    from modelseal.attest.signers import keygen, load_public_key, load_signer
    from modelseal.attest.statement import statement
    from modelseal.bom.build import build_bom
    from modelseal.bom.inputs import HashedModelFile, ModelInfo
    from modelseal.digest import DigestCache
    from modelseal.formats import BUNDLE_MEDIA_TYPE, INDEX_V1
    from modelseal.intoto_layout.authoring import load_template, new_layout, sign_layout
    from modelseal.modelpack import ModelMetadata
    from modelseal.oci import open_store
    from modelseal.oci.referrers import attach
    from modelseal.refs import parse_ref
    from modelseal.transfer import push

    work = root / "verify-bench"
    keys = work / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    names = ["owner", *STEPS, "other"]
    for n in names:
        if not (keys / f"{n}.key").exists():
            keygen(keys / n)
    signer = {n: load_signer(str(keys / f"{n}.key")) for n in names}
    pub = {n: load_public_key(keys / f"{n}.pub") for n in names}

    ref = parse_ref(f"{registry.host}/bench/model:v1")
    store = open_store(ref)
    t0 = time.perf_counter()
    res = push(model, store, ref, ModelMetadata({"name": "bench", "version": "1"}),
               cache=DigestCache(root / "cache" / "digests.sqlite"))
    print(f"# pushed {res.files} files in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    built = res.manifest
    assert built is not None
    files = {la.filepath: la.digest for la in built.layers}
    subject = subject_of(store, res.digest)
    for step, st in pipeline_statements(files).items():
        attach_bundle(store, subject, sign_statement(st, signer[step]))
    bom = build_bom(ModelInfo("bench", "1", [HashedModelFile(la.filepath, la.digest[7:], la.size)
                                              for la in built.layers], res.digest,
                              f"{registry.host}/bench/model"))
    subjects = [(la.filepath, la.digest[7:]) for la in built.layers]
    attach_bundle(store, subject, sign_statement(
        statement(subjects, "https://cyclonedx.org/bom", bom), signer["package"]))

    doc = new_layout(load_template("ml-pipeline"), [(s, pub[s]) for s in STEPS])
    layout = work / "root.layout.json"
    layout.write_text(json.dumps(sign_layout(doc, signer["owner"])))
    policy = work / "policy.yaml"
    policy.write_text(f"layout: {layout}\nlayout_keys: [{keys / 'owner.pub'}]\n"
                      "required_predicates: [https://cyclonedx.org/bom]\n"
                      "distinct_signers: [[train, approve]]\nmax_attestation_age: 30d\n")

    # model_signing's signature over the same files
    sig = work / "model.sig"
    sig.write_bytes(sign_model_signing([(p, d[7:]) for p, d in files.items()],
                                       load_signer(str(root / "keys" / "bench.key")),
                                       model_name=model.name))

    # a second, small model with 1,000 referrers
    small = work / "small-model"
    small.mkdir(exist_ok=True)
    (small / "weights.bin").write_bytes(b"w" * 4096)
    (small / "config.json").write_text("{}")
    sref = parse_ref(f"{registry.host}/bench/many:v1")
    sstore = open_store(sref)
    sres = push(small, sstore, sref, ModelMetadata({"name": "many"}))
    sfiles = {la.filepath: la.digest for la in (sres.manifest.layers if sres.manifest else [])}
    ssubject = subject_of(sstore, sres.digest)
    t0 = time.perf_counter()
    descs = []
    for step, st in pipeline_statements(sfiles).items():
        descs.append(attach_bundle(sstore, ssubject, sign_statement(st, signer[step])).descriptor)
    ssubjects = [(p, d[7:]) for p, d in sfiles.items()]
    descs.append(attach_bundle(sstore, ssubject, sign_statement(
        statement(ssubjects, "https://cyclonedx.org/bom", {"bomFormat": "CycloneDX"}),
        signer["package"])).descriptor)
    for i in range(extra_referrers - len(descs)):
        st = statement(ssubjects, "https://example.com/scan/v1", {"run": i})
        b = sign_statement(st, signer["evaluate"])
        descs.append(attach(sstore, ssubject, artifact_type=BUNDLE_MEDIA_TYPE, blob=b,
                            blob_media_type=BUNDLE_MEDIA_TYPE,
                            annotations={"dev.sigstore.bundle.content": "dsse-envelope",
                                         "dev.sigstore.bundle.predicateType":
                                             "https://example.com/scan/v1"},
                            update_index=False).descriptor)
    # the OCI 1.1 fallback index, written once for all of them (attach keeps it up to date one
    # referrer at a time; rebuilding it here only saves set-up time)
    index = {"schemaVersion": 2, "mediaType": INDEX_V1, "manifests": [d.to_dict() for d in descs]}
    sstore.put_manifest(canonical_json(index), INDEX_V1, "sha256-" + sres.digest[7:])
    print(f"# attached {len(descs)} referrers in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)
    # the same subject under a policy that needs every one of them fetched and checked
    policy_all = work / "policy-all.yaml"
    policy_all.write_text(policy.read_text().replace(
        "required_predicates: [https://cyclonedx.org/bom]",
        "required_predicates: [https://cyclonedx.org/bom, https://example.com/scan/v1]"))
    return {"ref": f"{registry.host}/bench/model:v1", "policy": policy, "sig": sig,
            "policy_all": policy_all,
            "many": f"{registry.host}/bench/many:v1", "digest": res.digest,
            "weights": {d for d in files.values()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--referrers", type=int, default=1000)
    args = ap.parse_args()
    cli = which_modelseal()
    if not cli:
        print("no `modelseal` CLI installed (pip install -e .)", file=sys.stderr)
        return 2
    from registry_server import RegistryServer

    model = ensure_model(args.root)
    files = model_files(model)
    total = sum(p.stat().st_size for p in files)
    exe = ensure_venv()
    _, pub = ensure_ec_key(args.root)
    print(f"# {datetime.datetime.now():%Y-%m-%d %H:%M}  {machine()}")
    print(f"# model {model}: {len(files)} files, {total / GiB:.3f} GiB")
    regdir = args.root / "verify-registry"
    import shutil

    shutil.rmtree(regdir, ignore_errors=True)
    registry = RegistryServer(regdir)
    registry.start()
    try:
        s = setup(args.root, model, registry, args.referrers)
        warm(files)
        print("# all runs below are WARM-CACHE (every file read once before timing)")
        ms = Result("modelseal verify (registry, 5 steps + BOM)", 0)
        many = Result(f"modelseal verify ({args.referrers} referrers, 994 not used)", 0)
        many_all = Result(f"modelseal verify ({args.referrers} referrers, all checked)", 0)
        msig = Result("model_signing 1.1 verify key (re-hashes)", total)
        tools = [
            (ms, [cli, "verify", s["ref"], "--policy", str(s["policy"]), "--json"]),
            (many, [cli, "verify", s["many"], "--policy", str(s["policy"]), "--json"]),
            (many_all, [cli, "verify", s["many"], "--policy", str(s["policy_all"]), "--json"]),
            (msig, [str(exe), "verify", "key", "--signature", str(s["sig"]), "--public_key",
                    str(pub), str(model)]),
        ]
        for rep in range(args.reps):
            for res, cmd in tools:
                wall, rss, out = run_measured(cmd)
                if res is ms:
                    assert json.loads(out)["verified"] is True, out
                if res is many or res is many_all:
                    got = json.loads(out)
                    assert got["verified"] is True and got["attestations"] == args.referrers, out
                res.walls.append(wall)
                res.rss_kib.append(rss)
                print(f"  run {rep + 1}/{args.reps} {res.name}: {wall:.2f} s", file=sys.stderr)
        print(table([ms, many, many_all, msig]))

        # in-process: what the verifier asked the registry for
        from modelseal.oci import open_store
        from modelseal.refs import parse_ref
        from modelseal.verify.pipeline import verify_model
        from modelseal.verify.policy import load_policy

        ref = parse_ref(s["ref"])
        store = CountingStore(open_store(ref))
        t0 = time.perf_counter()
        result = verify_model(store, ref, load_policy(s["policy"]))  # type: ignore[arg-type]
        wall = time.perf_counter() - t0
        weights_fetched = [d for d in store.blobs if d in s["weights"]]
        print(f"# in-process verify: {wall:.3f} s, verified={result.verified}, store calls "
              f"{dict(sorted(store.calls.items()))}; blobs fetched {len(store.blobs)} "
              f"(all attestation bundles); blobs of the model fetched: {len(weights_fetched)}")
        log = registry.log_file.read_text(errors="replace")
        weight_gets = sum(log.count(f"/blobs/{d}") for d in s["weights"])
        print(f"# registry log: {log.count('response completed')} requests logged; requests "
              f"naming a blob of the model: {weight_gets} (all from the push)")
        ok = ms.wall < 1.0 and not weights_fetched and many.wall < 3.0
        print(f"# targets: modelseal verify < 1 s: {ms.wall:.2f} s; 1,000 referrers < 3 s: "
              f"{many.wall:.2f} s ({many_all.wall:.2f} s when all 1,000 must be fetched and "
              f"checked); no weight blob fetched: {not weights_fetched} -> "
              f"{'MET' if ok else 'NOT MET'}")
        print(f"# model_signing verify key / modelseal verify: {msig.wall / ms.wall:.0f}x")
    finally:
        registry.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
