#!/usr/bin/env python3
"""Copy benchmark between two local registries (Debian's docker-registry on 127.0.0.1).

    python3 benchmarks/bench_copy.py [--root /tmp/modelseal-bench-copy] [--reps 3]
                                     [--files 2000] [--skip-big] [--skip-many]

1. A model of one 1 GiB random file with 20 referrers, pushed once to registry A:
   ``modelseal copy A/bench/big:v1 B/bench/big:v1`` into a registry B with fresh storage for
   every run, vs pulling the 1 GiB blob from A with ``curl -o`` and pushing it to B with
   ``curl -T`` (POST + streamed monolithic PUT). curl moves only the big blob (not the
   manifest, config and referrers): the comparison is generous to curl.
   Target: modelseal within 1.2x of curl.
2. A model of ``--files`` (2,000) files of 4 KiB: ``modelseal copy`` vs
   ``skopeo copy --all docker://A/... docker://B/...`` (plain HTTP on both sides), fresh B for
   every run. skopeo copies the manifest and its blobs only (it knows nothing of referrers);
   the model has none here. Target: modelseal faster.

Every tool runs in its own process; medians, best runs and peak RSS as the other scripts.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPO, GiB, MiB, Result, machine, run_measured, table, warm, which_modelseal

sys.path.insert(0, str(REPO / "tests"))
from registry_server import RegistryServer

ATTACH_CHILD = r"""
import sys
from modelseal.oci import open_store
from modelseal.oci.referrers import attach
from modelseal.oci.store import Descriptor
from modelseal.refs import parse_ref
ref = parse_ref(sys.argv[1]); n = int(sys.argv[2])
store = open_store(ref)
raw, mt, digest = store.get_manifest(ref.reference)
subject = Descriptor(mt, digest, len(raw))
for i in range(n):
    attach(store, subject, artifact_type="application/vnd.example.note.v1+json",
           blob=(b'{"note": %d}' % i), blob_media_type="application/vnd.example.note.v1+json")
"""

CURL_SCRIPT = r"""
set -eu
src=$1 dst=$2 repo=$3 digest=$4 tmp=$5
curl -sS -f -o "$tmp" "http://$src/v2/$repo/blobs/$digest"
loc=$(curl -sS -o /dev/null -D - -X POST "http://$dst/v2/$repo/blobs/uploads/" \
      | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
case $loc in http*) ;; *) loc="http://$dst$loc" ;; esac
case $loc in *\?*) sep='&' ;; *) sep='?' ;; esac
code=$(curl -sS -o /dev/null -w '%{http_code}' -T "$tmp" -X PUT \
       -H 'Content-Type: application/octet-stream' "$loc${sep}digest=$digest")
rm -f "$tmp"
[ "$code" = 201 ] || { echo "PUT answered $code" >&2; exit 1; }
"""


def registry(root: Path) -> RegistryServer:
    server = RegistryServer(Path(tempfile.mkdtemp(prefix="registry-", dir=root)))
    server.start()
    return server


def drop(server: RegistryServer) -> None:
    server.stop()
    shutil.rmtree(server.workdir, ignore_errors=True)


def make_big(root: Path) -> Path:
    model = root / "big"
    model.mkdir(parents=True, exist_ok=True)
    p = model / "weights.bin"
    if not (p.exists() and p.stat().st_size == GiB):
        with open(p, "wb") as f:
            for _ in range(GiB // (16 * MiB)):
                f.write(os.urandom(16 * MiB))
    return model


def make_many(root: Path, n: int) -> Path:
    model = root / f"many-{n}"
    (model / "shards").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        p = model / "shards" / f"part-{i:05d}.json"
        if not p.exists():
            p.write_bytes(os.urandom(4096))
    return model


def run(res: Result, cmd: list[str], env: dict[str, str]) -> None:
    wall, rss, _ = run_measured(cmd, env=env)
    res.walls.append(wall)
    res.rss_kib.append(rss)
    print(f"  {res.name}: {wall:.2f} s, {rss / 1024:.0f} MiB", file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("/tmp/modelseal-bench-copy"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--skip-many", action="store_true")
    args = ap.parse_args()
    root: Path = args.root
    root.mkdir(parents=True, exist_ok=True)
    cli = which_modelseal()
    if cli is None:
        print("modelseal CLI not installed", file=sys.stderr)
        return 2
    env = dict(os.environ, MODELSEAL_CACHE_DIR=str(root / "cache"),
               MODELSEAL_COPY_TMPDIR=str(root))
    print(f"# {datetime.datetime.now():%Y-%m-%d %H:%M}  {machine()}")
    ok = True
    results: list[Result] = []
    src = registry(root)
    try:
        if not args.skip_big:
            big = make_big(root)
            warm([big / "weights.bin"])
            subprocess.run([cli, "push", str(big), f"{src.host}/bench/big:v1"], check=True,
                           env=env, capture_output=True)
            subprocess.run([sys.executable, "-c", ATTACH_CHILD, f"{src.host}/bench/big:v1",
                            "20"], check=True, env=env)
            import json

            manifest = json.loads(subprocess.run(
                [cli, "inspect", f"{src.host}/bench/big:v1", "--json"], check=True, env=env,
                capture_output=True, text=True).stdout)["manifest"]
            digest = manifest["layers"][0]["digest"]
            mine = Result("modelseal copy (1 GiB + 20 referrers)", GiB)
            curl = Result("curl -o + curl -T (the 1 GiB blob only)", GiB)
            for _ in range(args.reps):
                for res, cmd in (
                        (mine, [cli, "copy", f"{src.host}/bench/big:v1",
                                "{dst}/bench/big:v1", "--json"]),
                        (curl, ["sh", "-c", CURL_SCRIPT, "curl", src.host, "{dst}",
                                "bench/big", digest, str(root / "curl.blob")])):
                    dst = registry(root)
                    try:
                        run(res, [c.replace("{dst}", dst.host) for c in cmd], env)
                    finally:
                        drop(dst)
            results += [mine, curl]
            ratio = mine.wall / curl.wall
            good = ratio <= 1.2
            ok &= good
            print(f"target copy 1 GiB + 20 referrers: {ratio:.2f}x curl pull+push "
                  f"(need <= 1.2x): {'PASS' if good else 'FAIL'}")
        if not args.skip_many:
            many = make_many(root, args.files)
            subprocess.run([cli, "push", str(many), f"{src.host}/bench/many:v1"], check=True,
                           env=env, capture_output=True)
            mine = Result(f"modelseal copy ({args.files} x 4 KiB files)", args.files * 4096)
            skopeo = Result(f"skopeo copy ({args.files} x 4 KiB files)", args.files * 4096)
            for _ in range(args.reps):
                for res, cmd in (
                        (mine, [cli, "copy", f"{src.host}/bench/many:v1",
                                "{dst}/bench/many:v1", "--json"]),
                        (skopeo, ["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                                  "--dest-tls-verify=false",
                                  f"docker://{src.host}/bench/many:v1",
                                  "docker://{dst}/bench/many:v1"])):
                    dst = registry(root)
                    try:
                        run(res, [c.replace("{dst}", dst.host) for c in cmd], env)
                    finally:
                        drop(dst)
            results += [mine, skopeo]
            ratio = mine.wall / skopeo.wall
            good = ratio < 1.0
            ok &= good
            print(f"target copy {args.files} files: {ratio:.2f}x skopeo (need < 1.0x): "
                  f"{'PASS' if good else 'FAIL'}")
    finally:
        drop(src)
    print()
    print(table(results))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
