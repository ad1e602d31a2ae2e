"""``modelseal bom REF`` of a small pushed model, whole process, on a local docker-registry.

    python3 benchmarks/bench_bom.py [--reps 5] [--src SRC] [--src SRC2 ...]

A 3-file model is scanned (signed) and pushed with its attestations (safety, package link,
model-signing signature) to Debian's ``docker-registry`` on 127.0.0.1 (started with
``tests/registry_server.py``); then ``modelseal bom REF -o FILE`` runs in its own process,
``--reps`` times, interleaved between the ``--src`` trees given (``PYTHONPATH=SRC``: time an
older checkout's code on the same model, before/after). Reports the median wall time and
checks that every tree wrote the same BOM (serial number and timestamp aside).
Target: under 1.5 s (the slowest command of the documented path, docs/bom-and-safety.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from _common import REPO, Result, machine, run_measured, table  # noqa: E402

from registry_server import RegistryServer  # noqa: E402

TARGET_S = 1.5


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "modelseal.cli", *args]


def _env(src: Path, work: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(src), "MODELSEAL_CACHE_DIR": str(work / "cache")}


def _bom_content(path: Path) -> object:
    doc = json.loads(path.read_text())
    doc.pop("serialNumber", None)
    doc.get("metadata", {}).pop("timestamp", None)
    return doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--src", type=Path, action="append",
                    help="a src/ tree to time (repeatable; default: this checkout's)")
    args = ap.parse_args()
    srcs: list[Path] = [s.resolve() for s in (args.src or [REPO / "src"])]
    print(f"# {machine()}")
    with tempfile.TemporaryDirectory(prefix="modelseal-bench-bom-") as tmp:
        work = Path(tmp)
        model = work / "model"
        model.mkdir()
        (model / "config.json").write_text('{"layers": 2}')
        (model / "README.md").write_text("# tiny\n")
        (model / "weights.bin").write_bytes(os.urandom(4096))
        with RegistryServer(work / "registry") as reg:
            ref = f"{reg.host}/bench/tiny:v1"
            env = _env(srcs[0], work)
            for cmd in (["keygen", str(work / "erin")],
                        ["scan", str(model), "--signer", str(work / "erin.key"),
                         "--attestations-dir", str(work / "atts")],
                        ["push", str(model), ref, "--signer", str(work / "erin.key"),
                         "--attestations", str(work / "atts")]):
                run_measured(_cli(*cmd), cwd=work, env=env)
            results = [Result(f"modelseal bom REF ({s})", 0) for s in srcs]
            boms = []
            for rep in range(args.reps):
                for i, (s, res) in enumerate(zip(srcs, results, strict=True)):
                    out = work / f"bom-{i}.json"
                    wall, rss, _ = run_measured(_cli("bom", ref, "-o", str(out)),
                                                cwd=work, env=_env(s, work))
                    res.walls.append(wall)
                    res.rss_kib.append(rss)
                    if rep == 0:
                        boms.append(_bom_content(out))
    print(table(results, with_throughput=False))
    same = all(b == boms[0] for b in boms)
    print(f"same BOM from every tree: {'yes' if same else 'NO'}")
    ok = same and results[-1].wall < TARGET_S
    print(f"target: last tree under {TARGET_S} s (median): {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
