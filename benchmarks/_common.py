"""Helpers shared by the benchmark scripts: the test model, timing, peak RSS, tables.

Every measured tool runs in its own process; ``run_measured`` waits for it with ``os.wait4`` so
the peak RSS reported is that process tree's (the largest single process in it), not ours.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV = HERE / ".venv"
GiB = 1024**3
MiB = 1024**2
DEFAULT_ROOT = Path(os.environ.get("MODELSEAL_BENCH_DIR", "/tmp/modelseal-bench"))


@dataclass
class Result:
    """Repeated measurements of one tool."""

    name: str
    nbytes: int
    walls: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    note: str = ""

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def gbps(self) -> float:
        return self.nbytes / self.wall / 1e9 if self.nbytes else 0.0

    @property
    def rss_mib(self) -> float:
        return max(self.rss_kib) / 1024


def run_measured(cmd: Sequence[str], *, cwd: Path | None = None,
                 env: dict[str, str] | None = None, quiet: bool = True) -> tuple[float, int, str]:
    """Run ``cmd``; return (wall seconds, peak RSS KiB, stdout). Raises on a non-zero exit."""
    out = subprocess.PIPE
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=out,
                            stderr=subprocess.PIPE if quiet else None, text=True)
    # communicate() would reap the child itself; read the pipes first, then wait4 for rusage.
    stdout = proc.stdout.read() if proc.stdout else ""
    stderr = proc.stderr.read() if proc.stderr else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{stdout}\n{stderr}")
    return wall, int(usage.ru_maxrss), stdout


def ensure_model(root: Path, big: int = 3, big_size: int = GiB, small: int = 500,
                 small_size: int = 4096) -> Path:
    """Create (once) ``root/model``: ``big`` random files of ``big_size`` + ``small`` small ones."""
    model = root / "model"
    (model / "extra").mkdir(parents=True, exist_ok=True)
    for i in range(big):
        p = model / f"weights-{i}.bin"
        if p.exists() and p.stat().st_size == big_size:
            continue
        print(f"creating {p} ({big_size / GiB:.2f} GiB random)", file=sys.stderr)
        tmp = p.with_suffix(".partial")
        with open(tmp, "wb") as f:
            left = big_size
            while left:
                n = min(left, 16 * MiB)
                f.write(os.urandom(n))
                left -= n
        tmp.replace(p)
    for i in range(small):
        p = model / "extra" / f"part-{i:04d}.json"
        if not (p.exists() and p.stat().st_size == small_size):
            p.write_bytes(os.urandom(small_size))
    return model


def model_files(model: Path) -> list[Path]:
    """Every regular file under ``model``, sorted."""
    return sorted(p for p in model.rglob("*") if p.is_file())


def warm(paths: Sequence[Path]) -> None:
    """Read every file once so that all runs see a warm page cache."""
    buf = bytearray(8 * MiB)
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


def ensure_venv() -> Path:
    """benchmarks/.venv with model-signing 1.1.x (created by setup_venv.sh)."""
    exe = VENV / "bin" / "model_signing"
    if not exe.exists():
        subprocess.run([str(HERE / "setup_venv.sh")], check=True)
    return exe


def ensure_ec_key(root: Path) -> tuple[Path, Path]:
    """An ECDSA P-256 key pair made with openssl: (private PEM, public PEM)."""
    keys = root / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    priv, pub = keys / "bench.key", keys / "bench.pub"
    if not priv.exists():
        subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout",
                        "-out", str(priv)], check=True)
        subprocess.run(["openssl", "ec", "-in", str(priv), "-pubout", "-out", str(pub)],
                       check=True, capture_output=True)
    return priv, pub


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{platform.node()}: {os.cpu_count()} cores, {cpu}, Python "
            f"{platform.python_version()}, load average {load} (other work skews timings)")


def table(results: Sequence[Result], *, with_throughput: bool = True) -> str:
    head = f"{'tool':<50} {'median s':>9} {'best s':>7} {'GB/s':>7} {'peak RSS MiB':>13}  runs"
    lines = [head, "-" * len(head)]
    for r in results:
        gb = f"{r.gbps:7.3f}" if with_throughput and r.nbytes else f"{'-':>7}"
        runs = " ".join(f"{w:.2f}" for w in r.walls)
        lines.append(f"{r.name:<50} {r.wall:9.3f} {min(r.walls):7.3f} {gb} {r.rss_mib:13.1f}"
                     f"  [{runs}]"
                     + (f"  {r.note}" if r.note else ""))
    return "\n".join(lines)


def which_modelseal() -> str | None:
    """The ``modelseal`` console script next to this Python, if the CLI is installed."""
    cand = Path(sys.executable).parent / "modelseal"
    return str(cand) if cand.exists() else shutil.which("modelseal")
