#!/usr/bin/env python3
"""Step-recording benchmark: ``modelseal run --step package`` vs ``model_signing sign key``.

    python3 benchmarks/bench_run.py [--root /tmp/modelseal-bench] [--reps 5]

Both hash every file of the 3 x 1 GiB + 500 x 4 KiB model and sign one statement with the
same ECDSA P-256 key, each in its own process, interleaved, warm page cache. Target:
modelseal at most 0.75x model_signing's wall time, peak RSS < 100 MiB. Also shown: the
start-up of each (``--help``), and ``modelseal run --digest-cache`` on an unchanged model.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
from pathlib import Path

from _common import (
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    root: Path = args.root
    cli = which_modelseal()
    if not cli:
        print("no `modelseal` CLI installed (pip install -e .)", file=sys.stderr)
        return 2
    model = ensure_model(root)
    files = model_files(model)
    total = sum(p.stat().st_size for p in files)
    exe = ensure_venv()
    priv, _ = ensure_ec_key(root)
    att = root / "attestations"
    env = dict(os.environ, MODELSEAL_CACHE_DIR=str(root / "run-cache"))

    print(f"# {datetime.datetime.now():%Y-%m-%d %H:%M}  {machine()}")
    print(f"# model {model}: {len(files)} files, {total / GiB:.3f} GiB; warming page cache ...")
    warm(files)
    print("# all runs below are WARM-CACHE (every file read once before timing)")

    run_cmd = [cli, "run", "--step", "package", "--signer", str(priv), "--products", str(model),
               "--attestations-dir", str(att), "--base-dir", str(model.parent), "--", "true"]
    ms = Result("modelseal run --step package ... -- true", total)
    msc = Result("modelseal run ... --digest-cache (unchanged)", total)
    theirs = Result("model_signing 1.1 sign key", total)
    help_ms = Result("modelseal --help (start-up)", 0)
    help_theirs = Result("model_signing --help (start-up)", 0)
    runs = [
        (ms, run_cmd),
        (theirs, [str(exe), "sign", "key", "--private_key", str(priv),
                  "--signature", str(root / "bench-run-model_signing.sig"), str(model)]),
        (msc, [*run_cmd[:-2], "--digest-cache", "--", "true"]),
        (help_ms, [cli, "--help"]),
        (help_theirs, [str(exe), "--help"]),
    ]
    run_measured(runs[2][1], env=env)  # fill the digest cache once
    written: list[str] = []
    for rep in range(args.reps):
        for res, cmd in runs:
            shutil.rmtree(att, ignore_errors=True)
            wall, rss, _ = run_measured(cmd, env=env, cwd=root)
            res.walls.append(wall)
            res.rss_kib.append(rss)
            if res is ms:
                written = sorted(p.name for p in att.rglob("*") if p.is_file())
            print(f"  run {rep + 1}/{args.reps} {res.name}: {wall:.2f} s, {rss / 1024:.0f} MiB",
                  file=sys.stderr)
    print(f"# modelseal run wrote {written} to {att}")

    print()
    print(table([ms, theirs, msc, help_ms, help_theirs]))
    print()
    ratio = ms.wall / theirs.wall
    ok = ratio <= 0.75 and ms.rss_mib < 100
    print(f"target run: modelseal {ms.wall:.3f} s = {ratio:.2f}x model_signing {theirs.wall:.3f} s "
          f"(need <= 0.75x), peak RSS {ms.rss_mib:.0f} MiB (need < 100): "
          f"{'PASS' if ok else 'FAIL'}")
    print(f"  best-of-{args.reps} ratio (less sensitive to other load): "
          f"{min(ms.walls) / min(theirs.walls):.2f}x")
    print(f"with --digest-cache on an unchanged model: {msc.wall / theirs.wall:.2f}x")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
