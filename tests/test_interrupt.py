"""Interrupted pulls and pushes, full disks, racing pushes: the target is the old model or the
new one, never a mix, and the next run finishes the job and leaves nothing behind.

Pulls run as real ``python -m modelseal.cli pull`` processes, stopped by SIGKILL at every step
of the pull (the ``MODELSEAL_TEST_KILL_AT`` hook makes the point deterministic) and by
SIGKILL, SIGTERM and SIGINT at random times.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from modelseal.errors import DiskFullError
from modelseal.modelpack import ModelMetadata
from modelseal.oci import open_store
from modelseal.refs import parse_ref
from modelseal.transfer import pull, push, recover
from paths import small_tmpfs

MD = ModelMetadata({"name": "m", "version": "1"})
Tree = dict[str, bytes | None]  # relpath -> content (None for a directory)


def snapshot(root: Path) -> Tree:
    """Every entry under ``root``: files with their bytes, directories as None."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes())
            for p in sorted(root.rglob("*"))}


def make_version(root: Path, version: int, files: int) -> Path:
    """Models whose trees differ in every file, and in paths only one version has."""
    root.mkdir(parents=True)
    for i in range(files):
        d = root / f"shard{i % 7}"
        d.mkdir(exist_ok=True)
        (d / f"f{i:05d}.bin").write_bytes(f"v{version}:{i}:".encode() + os.urandom(64))
    (root / f"only-v{version}").mkdir()
    (root / f"only-v{version}" / "note.txt").write_text(f"v{version}")
    (root / "weights.bin").write_bytes(os.urandom(256 << 10))
    return root


class Models:
    def __init__(self, tmp: Path, files: int) -> None:
        self.layout = tmp / "layout"
        self.src = {v: make_version(tmp / f"src-v{v}", v, files) for v in (1, 2)}
        self.trees = {v: snapshot(p) for v, p in self.src.items()}
        for v, p in self.src.items():
            ref = parse_ref(f"oci:{self.layout}:v{v}")
            push(p, open_store(ref), ref, MD)
        self.deploy = tmp / "deploy"
        self.deploy.mkdir()
        self.target = self.deploy / "model"

    def ref(self, v: int) -> str:
        return f"oci:{self.layout}:v{v}"

    def state(self) -> str:
        """'v1', 'v2', 'absent', or 'MIXED' (the one outcome that must never happen)."""
        if not self.target.exists():
            return "absent"
        snap = snapshot(self.target)
        for v, t in self.trees.items():
            if snap == t:
                return f"v{v}"
        return "MIXED"

    def leftovers(self) -> list[str]:
        return sorted(p.name for p in self.deploy.iterdir() if p.name != "model")

    def pull_cmd(self, v: int) -> list[str]:
        return [sys.executable, "-m", "modelseal.cli", "pull", self.ref(v), str(self.target),
                "--overwrite", "--json"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    return Models(tmp_path_factory.mktemp("interrupt"), files=120)


@pytest.fixture()
def deployed_v1(models: Models) -> Iterator[Models]:
    """The target holds v1 (as a deployer would have it) before each test."""
    import shutil

    for p in models.deploy.iterdir():
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    pull(open_store(parse_ref(models.ref(1))), parse_ref(models.ref(1)), models.target)
    assert models.state() == "v1"
    yield models


def run(cmd: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env},
                          timeout=120)


KILL_POINTS = ["file:1", "file:61", "file:122", "journal", "swapped", "committed"]


# every kill point of each switch: "moved-old" exists only in the two-rename one
SWITCH_KILLS = [(p, True) for p in KILL_POINTS] + [(p, False) for p in [*KILL_POINTS,
                                                                         "moved-old"]]


@pytest.mark.parametrize("point,exchange", SWITCH_KILLS,
                         ids=[f"{p}-{'rename-exchange' if x else 'two-renames'}"
                              for p, x in SWITCH_KILLS])
def test_sigkill_at_every_step_of_an_overwrite_leaves_v1_or_v2(deployed_v1: Models, point: str,
                                                               exchange: bool) -> None:
    m = deployed_v1
    env = {"MODELSEAL_TEST_KILL_AT": point}
    if not exchange:
        env["MODELSEAL_TEST_NO_EXCHANGE"] = "1"
    p = run(m.pull_cmd(2), **env)
    assert p.returncode == -signal.SIGKILL, p.stderr
    state = m.state()
    if point == "moved-old":
        # Between the two renames the target is briefly absent (the reason RENAME_EXCHANGE is
        # used where it exists); the journal beside it says how to undo.
        assert state == "absent"
        assert any(n.endswith(".modelseal-journal") for n in m.leftovers())
    else:
        assert state == ("v2" if point in ("swapped", "committed") else "v1")
    recover(m.target)  # what any later pull into the target does first
    assert m.state() in ("v1", "v2")
    assert m.leftovers() == []
    p = run(m.pull_cmd(2))
    assert p.returncode == 0, p.stderr
    assert m.state() == "v2"
    assert m.leftovers() == []


def test_sigkill_of_a_first_pull_leaves_nothing_and_rerun_completes(models: Models) -> None:
    import shutil

    for p in models.deploy.iterdir():
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    p = run(models.pull_cmd(2), MODELSEAL_TEST_KILL_AT="file:60")
    assert p.returncode == -signal.SIGKILL
    assert models.state() == "absent"
    assert len(models.leftovers()) == 1  # the killed run's staging directory
    p = run(models.pull_cmd(2))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert any("interrupted pull" in n for n in out["recovered"])
    assert models.state() == "v2"
    assert models.leftovers() == []


def kill_randomly(m: Models, sig: int, rng: random.Random, *,
                  late: float = 2.0) -> tuple[str, int | None]:
    """Start a pull of v2 over v1 and send ``sig`` after a random delay; the outcome."""
    proc = subprocess.Popen(m.pull_cmd(2), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(rng.uniform(0.0, late))
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    return m.state(), proc.returncode


def test_random_kills_never_leave_a_mixed_tree(deployed_v1: Models) -> None:
    """SIGKILL, SIGTERM and SIGINT at random times (MODELSEAL_KILL_RUNS, default 18)."""
    m = deployed_v1
    rng = random.Random(int(os.environ.get("MODELSEAL_KILL_SEED", "7")))
    runs = int(os.environ.get("MODELSEAL_KILL_RUNS", "18"))
    # How long a whole pull takes here, so the kills spread over start-up, download, switch.
    t0 = time.perf_counter()
    assert run(m.pull_cmd(1)).returncode == 0
    late = (time.perf_counter() - t0) * 1.2
    outcomes: dict[str, int] = {}
    sigs = [signal.SIGKILL, signal.SIGTERM, signal.SIGINT]
    for i in range(runs):
        if m.state() != "v1":  # start every round from a deployed v1
            assert run(m.pull_cmd(1)).returncode == 0
        state, rc = kill_randomly(m, sigs[i % 3], rng, late=late)
        key = f"{state} ({'finished first' if rc == 0 else 'interrupted'})"
        outcomes[key] = outcomes.get(key, 0) + 1
        assert state in ("v1", "v2"), (state, rc)
        if rc == 0:
            assert state == "v2"  # the kill came after the pull had finished
    print(f"\n{runs} random kills of `pull --overwrite` v2 over v1: {outcomes}")
    p = run(m.pull_cmd(2))
    assert p.returncode == 0, p.stderr
    assert m.state() == "v2"
    assert m.leftovers() == []


def test_sigkill_mid_push_to_layout_leaves_temporaries_the_next_push_removes(
        tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(64 << 20))
    layout = tmp_path / "layout"
    cmd = [sys.executable, "-m", "modelseal.cli", "push", str(src), f"oci:{layout}:v1",
           "--no-cache"]
    blobs = layout / "blobs" / "sha256"

    def temporaries() -> list[Path]:
        return [p for p in blobs.iterdir() if p.name.startswith(".tmp-")] \
            if blobs.is_dir() else []

    for _ in range(5):  # stopped while a blob is half-written: then killed, deterministically
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None and not temporaries():
            time.sleep(0.001)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGSTOP)  # frozen: what is on disk now stays
        caught = bool(temporaries())
        proc.kill()
        proc.wait()
        if caught:
            break
        shutil.rmtree(layout, ignore_errors=True)  # it finished first: again, from scratch
    else:
        pytest.fail("the push finished before it could be stopped mid-blob, 5 times")
    p = run([*cmd, "--json"])
    assert p.returncode == 0, p.stderr
    assert any(".tmp-" in n for n in json.loads(p.stdout)["recovered"])  # and says so
    assert [p.name for p in blobs.iterdir() if p.name.startswith(".tmp-")] == []
    assert [p.name for p in layout.iterdir() if p.name.startswith(".tmp-")] == []


# -- concurrency ----------------------------------------------------------------------------

def test_racing_pushes_of_different_content_to_one_tag_exactly_one_wins(tmp_path: Path) -> None:
    n = 4
    srcs = []
    for i in range(n):
        s = tmp_path / f"src{i}"
        s.mkdir()
        (s / "w.bin").write_bytes(os.urandom(2 << 20) + bytes([i]))
        srcs.append(s)
    ref = f"oci:{tmp_path / 'layout'}:prod"
    cmds = [[sys.executable, "-m", "modelseal.cli", "push", str(s), ref, "--json", "--no-cache"]
            for s in srcs]
    with ThreadPoolExecutor(n) as ex:
        results = list(ex.map(lambda c: run(c), cmds))
    codes = sorted(r.returncode for r in results)
    assert codes == [0] + [5] * (n - 1), [r.stderr for r in results]
    winner = json.loads(next(r for r in results if r.returncode == 0).stdout)["digest"]
    assert open_store(parse_ref(ref)).resolve("prod") == winner
    for r in results:
        if r.returncode == 5:
            err = json.loads(r.stderr.strip().splitlines()[-1])
            assert err["type"] == "TagConflictError"
            digests = {w for w in err["error"].replace(";", " ").split()
                       if w.startswith("sha256:")}
            assert winner in digests and len(digests) == 2  # names both digests


# -- full file systems ----------------------------------------------------------------------

@pytest.fixture()
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs with 64 inodes."""
    yield from small_tmpfs(tmp_path, "size=2m,nr_inodes=64")


def _pull_cli(ref: str, target: Path) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "modelseal.cli", "pull", ref, str(target), "--json"])


def test_pull_into_a_full_file_system_is_exit_7_naming_path_and_bytes(tmp_path: Path,
                                                                      tiny_fs: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(3 << 20))
    ref = f"oci:{tmp_path / 'layout'}:v1"
    push(src, open_store(parse_ref(ref)), parse_ref(ref), MD)
    p = _pull_cli(ref, tiny_fs / "model")
    assert p.returncode == 7, p.stderr
    err = json.loads(p.stderr.strip().splitlines()[-1])
    assert err["type"] == "DiskFullError"
    assert str(tiny_fs) in err["error"] and "bytes" in err["error"]
    assert list(tiny_fs.iterdir()) == []


def test_pull_into_a_file_system_without_inodes_is_exit_7(tmp_path: Path,
                                                         tiny_fs: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(100):
        (src / f"f{i}.txt").write_text(str(i))
    ref = f"oci:{tmp_path / 'layout'}:v1"
    push(src, open_store(parse_ref(ref)), parse_ref(ref), MD)
    p = _pull_cli(ref, tiny_fs / "model")
    assert p.returncode == 7, p.stderr
    err = json.loads(p.stderr.strip().splitlines()[-1])
    assert err["type"] == "DiskFullError" and "inodes" in err["error"]
    assert list(tiny_fs.iterdir()) == []


def test_disk_filling_up_during_a_pull_is_a_disk_full_error(tmp_path: Path, tiny_fs: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """Another writer takes the space after the check: ENOSPC mid-write, same error."""
    import modelseal.transfer as transfer

    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(3 << 20))
    ref = parse_ref(f"oci:{tmp_path / 'layout'}:v1")
    push(src, open_store(ref), ref, MD)
    monkeypatch.setattr(transfer, "_space_check", lambda parent, manifest: None)
    with pytest.raises(DiskFullError) as e:
        pull(open_store(ref), ref, tiny_fs / "model")
    assert str(tiny_fs) in e.value.message
    assert list(tiny_fs.iterdir()) == []


def test_push_into_a_full_layout_directory_is_exit_7_and_leaves_no_temporaries(
        tmp_path: Path, tiny_fs: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(3 << 20))
    layout = tiny_fs / "layout"
    p = run([sys.executable, "-m", "modelseal.cli", "push", str(src), f"oci:{layout}:v1",
             "--json", "--no-cache"])
    assert p.returncode == 7, p.stderr
    err = json.loads(p.stderr.strip().splitlines()[-1])
    assert err["type"] == "DiskFullError" and str(layout) in err["error"]
    assert not [q for q in layout.rglob(".tmp-*")]
