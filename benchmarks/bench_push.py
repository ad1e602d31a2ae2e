#!/usr/bin/env python3
"""Push benchmark against Debian's docker-registry on 127.0.0.1.

    python3 benchmarks/bench_push.py [--root /tmp/modelseal-bench] [--reps 3]

1. A 1 GiB blob: modelseal's registry store (``RegistryStore.put_blob_file``, digest known,
   in its own process) and ``modelseal push`` of a directory holding only that file (digest
   cache warm), vs a streamed ``curl`` upload (POST /v2/<repo>/blobs/uploads/, then
   ``curl -T file -X PUT <location>&digest=...``). Every run gets a fresh registry storage,
   so nothing is skipped. Targets: within 1.1x of curl, peak RSS < 100 MiB.
2. Pushing an unchanged model again (3 x 1 GiB + 500 x 4 KiB, already in the registry, digest
   cache warm): target < 1 s.

The registry is started with the test suite's helper (tests/registry_server.py).

    python3 benchmarks/bench_push.py --size-gib 10 [--reps 2]

runs, instead, the large-file comparison (issue 10) on one random file of that size
(``ROOT/big-<N>gib/weights.bin``, created once; deleted afterwards unless ``--keep``):

- push: ``modelseal push DIR REG/bench/push:v1`` (digest cache warm, fresh registry storage
  every run) vs curl's streamed upload (POST + ``curl -T FILE -X PUT``);
- pull: ``modelseal pull REG/bench/big:v1 DIR`` (writes the file, hashes every byte against
  the manifest's digest, fsyncs, renames into place) vs ``curl -o FILE`` of the blob (writes
  only: no check, no fsync), ``curl -o FILE && sync FILE`` (writes + fsync) and
  ``curl | tee FILE | openssl dgst -sha256`` + ``sync FILE`` (the same work as modelseal's pull).
  Target: within 1.1x of curl for both.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import (
    DEFAULT_ROOT,
    REPO,
    GiB,
    Result,
    ensure_model,
    machine,
    model_files,
    run_measured,
    table,
    warm,
    which_modelseal,
)

sys.path.insert(0, str(REPO / "tests"))
from registry_server import RegistryServer

STORE_CHILD = r"""
import sys
from pathlib import Path
from modelseal.oci.registry import RegistryStore
host, repo, path, digest, size = sys.argv[1:6]
store = RegistryStore(host, repo)
assert store.put_blob_file(Path(path), digest, int(size)), "blob was skipped"
store.close()
"""

CURL_SCRIPT = r"""
set -eu
host=$1 repo=$2 file=$3 digest=$4
loc=$(curl -sS -o /dev/null -D - -X POST "http://$host/v2/$repo/blobs/uploads/" \
      | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
case $loc in http*) ;; *) loc="http://$host$loc" ;; esac
case $loc in *\?*) sep='&' ;; *) sep='?' ;; esac
code=$(curl -sS -o /dev/null -w '%{http_code}' -T "$file" -X PUT \
       -H 'Content-Type: application/octet-stream' "$loc${sep}digest=$digest")
[ "$code" = 201 ] || { echo "PUT answered $code" >&2; exit 1; }
"""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(4 * 1024 * 1024)
        while n := f.readinto(buf):
            h.update(memoryview(buf)[:n])
    return "sha256:" + h.hexdigest()


def fresh_registry(root: Path) -> RegistryServer:
    work = Path(tempfile.mkdtemp(prefix="registry-", dir=root))
    server = RegistryServer(work)
    server.start()
    return server


def drop(server: RegistryServer) -> None:
    server.stop()
    shutil.rmtree(server.workdir, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--size-gib", type=int, default=0,
                    help="run the large single-file push/pull comparison on a file this big")
    ap.add_argument("--keep", action="store_true", help="keep the large file afterwards")
    ap.add_argument("--only", choices=("push", "pull"),
                    help="with --size-gib: run only the push or only the pull comparison")
    args = ap.parse_args()
    root: Path = args.root
    root.mkdir(parents=True, exist_ok=True)
    if args.size_gib:
        return big_file(root, args.size_gib, args.reps, args.keep, args.only)

    model = ensure_model(root)
    files = model_files(model)
    blob = model / "weights-0.bin"
    size = blob.stat().st_size
    single = root / "single"  # a model directory holding only the 1 GiB file
    single.mkdir(exist_ok=True)
    if not (single / blob.name).exists():
        os.link(blob, single / blob.name)
    cli = which_modelseal()
    env = dict(os.environ, MODELSEAL_CACHE_DIR=str(root / "cache"))

    print(f"# {datetime.datetime.now():%Y-%m-%d %H:%M}  {machine()}")
    print(f"# blob {blob} ({size / GiB:.2f} GiB); warming page cache ...")
    warm(files)
    digest = sha256_file(blob)
    print("# warm-cache runs; a fresh registry storage for every 1 GiB run")

    store = Result("modelseal RegistryStore.put_blob_file", size)
    curl = Result("curl -T (POST + streamed monolithic PUT)", size)
    push1 = Result("modelseal push DIR (1 file, digest cache warm)", size)
    if cli:  # fill the digest cache once, so push times the upload, not the hashing
        s = fresh_registry(root)
        try:
            run_measured([cli, "push", str(single), f"{s.host}/warm:v1"], env=env)
        finally:
            drop(s)
    for rep in range(args.reps):
        runs: list[tuple[Result, list[str]]] = [
            (store, [sys.executable, "-c", STORE_CHILD, "{host}", "bench/store", str(blob),
                     digest, str(size)]),
            (curl, ["sh", "-c", CURL_SCRIPT, "curl", "{host}", "bench/curl", str(blob), digest]),
        ]
        if cli:
            runs.append((push1, [cli, "push", str(single), "{host}/bench/push:v1"]))
        for res, cmd in runs:
            server = fresh_registry(root)
            try:
                wall, rss, _ = run_measured([c.replace("{host}", server.host) for c in cmd],
                                            env=env)
            finally:
                drop(server)
            res.walls.append(wall)
            res.rss_kib.append(rss)
            print(f"  run {rep + 1}/{args.reps} {res.name}: {wall:.2f} s, {rss / 1024:.0f} MiB",
                  file=sys.stderr)

    results = [store, curl] + ([push1] if cli else [])
    again = Result("modelseal push MODEL again (unchanged, 3 GiB)", 0)
    if cli:
        server = fresh_registry(root)
        try:
            ref = f"{server.host}/bench/model:v1"
            first, rss, _ = run_measured([cli, "push", str(model), ref], env=env)
            print(f"  first push of the whole model: {first:.2f} s, {rss / 1024:.0f} MiB",
                  file=sys.stderr)
            for _ in range(max(3, args.reps)):
                wall, rss, _ = run_measured([cli, "push", str(model), ref], env=env)
                again.walls.append(wall)
                again.rss_kib.append(rss)
            again.note = f"(first push {first:.2f} s)"
        finally:
            drop(server)
        results.append(again)

    print()
    print(table(results))
    print()
    ok = True
    for r in [store] + ([push1] if cli else []):
        ratio = r.wall / curl.wall
        good = ratio <= 1.1 and r.rss_mib < 100
        ok &= good
        print(f"target push: {r.name}: {ratio:.2f}x curl (need <= 1.1x), peak RSS "
              f"{r.rss_mib:.0f} MiB (need < 100): {'PASS' if good else 'FAIL'}")
    if cli:
        good = again.wall < 1.0 and again.rss_mib < 100
        ok &= good
        print(f"target push unchanged model: {again.wall:.3f} s (need < 1 s), peak RSS "
              f"{again.rss_mib:.0f} MiB: {'PASS' if good else 'FAIL'}")
    else:
        print("`modelseal push`: no CLI installed yet, not measured")
    return 0 if ok else 1


CURL_GET = {
    "curl -o FILE (write only)": 'curl -sS -f -o "$3" "http://$1/v2/$2/blobs/$4"',
    "curl -o FILE && sync FILE (write + fsync)":
        'curl -sS -f -o "$3" "http://$1/v2/$2/blobs/$4" && sync "$3"',
    "curl | tee FILE | openssl sha256; sync (+hash+fsync)":
        'set -o pipefail; h=$(curl -sS -f "http://$1/v2/$2/blobs/$4" | tee "$3" '
        '| openssl dgst -sha256 -r); '
        'sync "$3"; [ "sha256:${h%% *}" = "$4" ] || { echo "digest mismatch" >&2; exit 1; }',
}


def big_file(root: Path, gib: int, reps: int, keep: bool, only: str | None = None) -> int:
    """Push and pull of one ``gib`` GiB file: modelseal vs curl (see the module docstring)."""
    cli = which_modelseal()
    if not cli:
        print("`modelseal` CLI not installed: nothing to compare", file=sys.stderr)
        return 1
    d = root / f"big-{gib}gib"
    d.mkdir(parents=True, exist_ok=True)
    blob = d / "weights.bin"
    if not (blob.exists() and blob.stat().st_size == gib * GiB):
        print(f"creating {blob} ({gib} GiB random)", file=sys.stderr)
        subprocess.run(["sh", "-c", f'head -c {gib * GiB} /dev/urandom > "$1.partial" && '
                        'mv "$1.partial" "$1"', "sh", str(blob)], check=True)
    size = blob.stat().st_size
    env = dict(os.environ, MODELSEAL_CACHE_DIR=str(root / "cache"))
    out = root / "pulled"
    loads: list[float] = []
    print(f"# {datetime.datetime.now():%Y-%m-%d %H:%M}  {machine()}")
    print(f"# {blob} ({size / GiB:.2f} GiB); warm-cache runs, fresh registry storage per push")
    try:
        warm([blob])
        digest = sha256_file(blob)
        s = fresh_registry(root)  # fills the digest cache: push times the upload only
        try:
            run_measured([cli, "push", str(d), f"{s.host}/warm:v1"], env=env)
        finally:
            drop(s)
        push = Result(f"modelseal push DIR ({gib} GiB file)", size)
        curl = Result("curl -T (POST + streamed monolithic PUT)", size)
        for rep in range(reps if only != "pull" else 0):
            for res, cmd in [
                (curl, ["sh", "-c", CURL_SCRIPT, "curl", "{host}", "bench/curl", str(blob),
                        digest]),
                (push, [cli, "push", str(d), "{host}/bench/push:v1"]),
            ]:
                server = fresh_registry(root)
                try:
                    loads.append(os.getloadavg()[0])
                    wall, rss, _ = run_measured([c.replace("{host}", server.host)
                                                 for c in cmd], env=env)
                finally:
                    drop(server)
                res.walls.append(wall)
                res.rss_kib.append(rss)
                print(f"  run {rep + 1}/{reps} {res.name}: {wall:.2f} s, {rss / 1024:.0f} MiB",
                      file=sys.stderr)
        pulls = [Result(f"modelseal pull REF DIR ({gib} GiB, hash + fsync)", size)]
        gets = [Result(name, size) for name in CURL_GET]
        server = fresh_registry(root)
        try:
            ref = f"{server.host}/bench/big:v1"
            run_measured([cli, "push", str(d), ref], env=env)
            for rep in range(reps if only != "push" else 0):
                runs: list[tuple[Result, list[str]]] = [
                    (r, ["bash", "-c", script, "curl", server.host, "bench/big",
                         str(out / "weights.bin"), digest])
                    for r, script in zip(gets, CURL_GET.values(), strict=True)]
                runs.append((pulls[0], [cli, "pull", ref, str(out)]))
                for res, cmd in runs:
                    shutil.rmtree(out, ignore_errors=True)
                    if res is not pulls[0]:  # modelseal pull creates its target itself
                        out.mkdir()
                    subprocess.run(["sync"], check=True)  # earlier runs' dirty pages
                    loads.append(os.getloadavg()[0])
                    wall, rss, _ = run_measured(cmd, env=env)
                    if res is pulls[0] and (out / "weights.bin").stat().st_size != size:
                        raise RuntimeError("pulled file has the wrong size")
                    res.walls.append(wall)
                    res.rss_kib.append(rss)
                    print(f"  run {rep + 1}/{reps} {res.name}: {wall:.2f} s, "
                          f"{rss / 1024:.0f} MiB", file=sys.stderr)
        finally:
            drop(server)
            shutil.rmtree(out, ignore_errors=True)
    finally:
        if not keep:
            blob.unlink(missing_ok=True)
    print()
    shown = ([curl, push] if only != "pull" else []) + ([*gets, *pulls] if only != "push" else [])
    print(table(shown))
    print(f"# load average (1 min) at the start of each run: "
          f"{min(loads):.2f} to {max(loads):.2f}")
    print()
    ok = True
    pairs = ([(push, curl)] if only != "pull" else []) + (
        [(pulls[0], gets[0]), (pulls[0], gets[1]), (pulls[0], gets[2])] if only != "push" else [])
    for r, base in pairs:
        ratio = r.wall / base.wall
        best = min(r.walls) / min(base.walls)
        ok &= ratio <= 1.1
        print(f"target: {r.name} vs {base.name}: {ratio:.2f}x median, {best:.2f}x best "
              f"(need <= 1.1x): {'PASS' if ratio <= 1.1 else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
