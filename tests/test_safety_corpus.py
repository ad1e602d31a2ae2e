"""The scanner against a corpus written by the real writers and proved real by the real loaders.

Each code-executing corpus file counts only if loading it with numpy, joblib, pickle (or torch,
when installed) in a subprocess really ran its payload (a ``touch`` of a marker file). The
scanner must call every one of them unsafe, and must never call anything ``safe`` that it did
not read to the end.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
import zlib
from pathlib import Path

import pytest

from modelseal.safety import ScanLimits, safety_predicate, scan_model, unsafe_findings

pytest.importorskip("numpy")
pytest.importorskip("joblib")

import safety_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[safety_corpus.Entry]]:
    root = tmp_path_factory.mktemp("corpus")
    return root, safety_corpus.build(root)


def test_every_corpus_file_gets_its_verdict(corpus: tuple[Path, list[safety_corpus.Entry]]
                                            ) -> None:
    root, entries = corpus
    got = {f.path: f for f in scan_model(root).files}
    wrong = {e.name: (got[e.name].format, got[e.name].verdict, got[e.name].note)
             for e in entries if got[e.name].verdict != e.expect}
    assert wrong == {}


def test_corpus_payloads_really_run_under_numpy_joblib_and_pickle(
        corpus: tuple[Path, list[safety_corpus.Entry]]) -> None:
    root, entries = corpus
    real = [e for e in entries if e.loader in ("numpy", "joblib", "pickle")]
    assert len(real) >= 30
    ran = safety_corpus.run_loaders(real, root)
    assert {e.name for e in real} - ran == set()


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_corpus_payloads_really_run_under_torch_load(
        corpus: tuple[Path, list[safety_corpus.Entry]]) -> None:
    root, entries = corpus
    real = [e for e in entries if e.loader == "torch"]
    ran = safety_corpus.run_loaders(real, root)
    assert {e.name for e in real} - ran == set()


def test_model_with_a_code_executing_corpus_file_fails(
        corpus: tuple[Path, list[safety_corpus.Entry]]) -> None:
    root, entries = corpus
    pred = safety_predicate(scan_model(root))
    assert pred["result"] == "FAILED"
    refused = {m.split(" ")[0] for m in unsafe_findings(pred)}
    assert {e.name for e in entries if e.expect == "unsafe"} <= refused


# --- the bounds: past a limit the verdict is unknown, never safe --------------------------


def test_decompression_bomb_is_unknown_not_safe(tmp_path: Path) -> None:
    (tmp_path / "bomb.joblib").write_bytes(
        gzip.compress(pickle.dumps({"w": b"\x00" * 100_000}) + b"\x00" * 5_000_000))
    f = scan_model(tmp_path, limits=ScanLimits(max_expanded_bytes=1_000_000)).files[0]
    assert f.verdict == "unknown" and f.code_executing
    assert unsafe_findings(safety_predicate(scan_model(
        tmp_path, limits=ScanLimits(max_expanded_bytes=1_000_000))))


def test_compression_nested_past_the_depth_limit_is_unknown(tmp_path: Path) -> None:
    data = pickle.dumps({"ok": 1})
    for _ in range(6):
        data = zlib.compress(data)
    (tmp_path / "deep.bin").write_bytes(data)
    f = scan_model(tmp_path, limits=ScanLimits(max_depth=3)).files[0]
    assert f.verdict == "unknown" and f.code_executing


def test_payload_after_unreadable_bytes_makes_the_file_unknown(tmp_path: Path) -> None:
    # a benign pickle, bytes that are no pickle, then a payload: no stock loader reaches it,
    # but a custom one could, so the file is not proved safe
    evil = b"\x80\x02cposix\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03."
    (tmp_path / "m.pkl").write_bytes(pickle.dumps({"ok": 1}) + b"\xff\xfe" * 8 + evil)
    f = scan_model(tmp_path).files[0]
    assert f.verdict == "unknown" and f.code_executing


def test_joblib_array_inside_a_pickle_frame_is_not_followed(tmp_path: Path) -> None:
    joblib = pytest.importorskip("joblib")
    np = pytest.importorskip("numpy")
    joblib.dump({"a": np.arange(4.0)}, tmp_path / "m.joblib")
    data = bytearray((tmp_path / "m.joblib").read_bytes())
    # grow the first frame past the wrapper's BUILD: array bytes would now sit inside it
    assert data[2] == 0x95
    n = int.from_bytes(data[3:11], "little")
    data[3:11] = (n + 8).to_bytes(8, "little")
    (tmp_path / "m.joblib").write_bytes(bytes(data))
    f = scan_model(tmp_path).files[0]
    assert f.verdict != "safe"


def test_mutated_corpus_files_never_end_in_a_scanner_error(
        corpus: tuple[Path, list[safety_corpus.Entry]], tmp_path: Path) -> None:
    """Hostile bytes are judged, not crashed on: 400 seeded mutations of the corpus."""
    import random

    from modelseal.safety import _scan_file

    root, _ = corpus
    rnd = random.Random(20261201)
    files = sorted(p for p in root.iterdir() if p.is_file())
    faults = []
    for i in range(400):
        b = bytearray(rnd.choice(files).read_bytes())
        for _ in range(rnd.randint(1, 6)):
            if not b:
                break
            j = rnd.randrange(len(b))
            op = rnd.random()
            if op < 0.6:
                b[j] = rnd.randrange(256)
            elif op < 0.8:
                del b[j:j + rnd.randint(1, 16)]
            else:
                b[j:j] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 8)))
        p = tmp_path / f"m{i}"
        p.write_bytes(bytes(b))
        f = _scan_file(p, p.name, ScanLimits(max_expanded_bytes=10_000_000))
        if f.note and "scanner error" in f.note:
            faults.append((p.name, f.note))
    assert faults == []


@pytest.mark.skipif(not os.environ.get("MODELSEAL_SAFETY_FUZZ"),
                    reason="opt-in: MODELSEAL_SAFETY_FUZZ=<mutants> (slow, runs real loaders)")
def test_differential_fuzz_no_payload_that_runs_passes(tmp_path: Path) -> None:
    """Mutants of the corpus are scanned, then loaded by the real loader; any mutant whose
    payload ran must be ``unsafe``. Markers are cleared after each load and any new one is
    attributed to that load."""
    import json
    import random
    import subprocess
    import sys

    from modelseal.safety import _scan_file

    root = tmp_path / "corpus"
    entries = safety_corpus.build(root)
    loaders = {"pickle", "numpy", "joblib"} | (
        {"torch"} if importlib.util.find_spec("torch") else set())
    code = [e for e in entries if e.loader in loaders]
    rnd = random.Random(int(os.environ.get("MODELSEAL_SAFETY_FUZZ_SEED", "1")))
    mut = tmp_path / "mut"
    mut.mkdir()
    jobs: dict[str, list[str]] = {}
    verdicts: dict[str, str] = {}
    for i in range(int(os.environ["MODELSEAL_SAFETY_FUZZ"])):
        e = rnd.choice(code)
        b = bytearray((root / e.name).read_bytes())
        for _ in range(rnd.randint(1, 2)):
            j = rnd.randrange(len(b))
            op = rnd.random()
            if op < 0.6:
                b[j] = rnd.randrange(256)
            elif op < 0.8:
                del b[j:j + rnd.randint(1, 8)]
            else:
                b[j:j] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 4)))
        p = mut / f"{i}_{e.name}"
        p.write_bytes(bytes(b))
        verdicts[str(p)] = _scan_file(p, p.name, ScanLimits()).verdict
        jobs.setdefault(str(e.loader), []).append(str(p))
    marks = root / "markers"
    ran: list[str] = []
    for loader, paths in jobs.items():
        prog = "\n".join([
            "import json, os", f"D = {str(marks)!r}", "out = []",
            f"for P in json.loads({json.dumps(json.dumps(paths))}):",
            "    try:", "        " + safety_corpus._LOADERS[loader],
            "    except BaseException:", "        pass",
            "    hits = os.listdir(D)", "    if hits:", "        out.append(P)",
            "    for h in hits:", "        os.remove(os.path.join(D, h))",
            "print(json.dumps(out))"])
        r = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True,
                           timeout=1800, cwd=mut, check=False,
                           preexec_fn=safety_corpus.limit_memory)
        ran += json.loads(r.stdout.strip().splitlines()[-1])
    assert ran, "no mutant ran its payload: the harness is broken"
    assert [(Path(p).name, verdicts[p]) for p in ran if verdicts[p] != "unsafe"] == []
