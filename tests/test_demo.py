"""The README's main job, end to end: ``bash scripts/demo.sh`` as a user runs it.

The demo runs in this test's own virtualenv (``MODELSEAL_VENV`` + ``MODELSEAL_NO_INSTALL``:
nothing is installed) with this checkout's code first on ``PYTHONPATH``, and writes
everything under a temporary ``DEMO_OUT``. It stops on any refusal with the wrong exit code,
so its exit status alone says every attack was refused for the documented reason; the test
then checks what it left behind, by structure: the promotion's signers by name and trusted
time, the retirement, the report and the restored copy, and the two lifecycle refusals by
rule (re-verified with ``--json``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from modelseal.verify.lifecycle_chain import RULE_ROLLBACK, RULE_STAGE
from paths import REPO, missing_tool

# the refusals the demo shows, in order: retag (5), not yet promoted (10), moved tag (10),
# swapped blob (4), retired (10), retirement deleted (10); docs/exit-codes.md
EXPECTED_REFUSALS = [5, 10, 10, 4, 10, 10]


def _demo_env(out: Path, home: Path) -> dict[str, str]:
    bin_dir = Path(sys.prefix) / "bin"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSEAL_")}
    env.update({
        "MODELSEAL_VENV": sys.prefix,
        "MODELSEAL_NO_INSTALL": "1",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(
            [str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "DEMO_OUT": str(out),
        # nothing of the demo lands in the real home (state, caches, credentials)
        "HOME": str(home),
        "XDG_STATE_HOME": str(home / "state"),
        "XDG_CACHE_HOME": str(home / "cache"),
    })
    return env


def _verify_json(out: Path, env: dict[str, str], ref: str, state: Path) -> Any:
    res = subprocess.run([sys.executable, "-m", "modelseal.cli", "verify", ref,
                          "--policy", str(out / "policy.yaml"), "--state", str(state),
                          "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 10, res.stdout + res.stderr
    return json.loads(res.stdout)


def test_demo_shows_the_main_job_and_refuses_every_attack(tmp_path: Path) -> None:
    if sys.prefix == sys.base_prefix or not (Path(sys.prefix) / "bin" / "modelseal").exists():
        missing_tool("the virtualenv with modelseal installed that runs pytest (the demo needs it)")
    for tool in ("bash", "openssl"):
        if shutil.which(tool) is None:
            missing_tool(tool)
    out = tmp_path / "demo-out"
    env = _demo_env(out, tmp_path / "home")
    # its own process group: on a timeout the demo's TSA goes with it
    proc = subprocess.Popen(["bash", str(REPO / "scripts" / "demo.sh")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=1200)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    log = stdout + stderr
    assert proc.returncode == 0, log[-4000:]
    assert "UNEXPECTED" not in log
    codes = [int(c) for c in re.findall(r"\(refused as expected, exit code (\d+)\)", log)]
    assert codes == EXPECTED_REFUSALS, log[-4000:]
    assert "\nVERIFIED" in stdout

    # promotion to production: one record, two release managers by name, trusted time
    history = json.loads((out / "history.json").read_text())
    assert (history["stage"], history["status"]) == ("production", "active")
    records = [e for e in history["events"] if e["kind"] == "lifecycle"]
    assert [(r["sequence"], r["stage"], r["timeSource"]) for r in records] == [
        (1, "production", "rfc3161")]
    signers = sorted(s["name"].split(" ")[0] for s in records[0]["signers"])
    assert signers == ["frank", "grace"] and all(s["counted"] for s in records[0]["signers"])
    steps = [e["what"] for e in history["events"] if e["kind"] == "step"]
    assert sorted(steps) == sorted(f"step {s}" for s in
                                   ("prepare-data", "train", "evaluate", "approve", "package"))
    assert all(e["verified"] and e["timeSource"] == "rfc3161" for e in history["events"])

    retired = json.loads((out / "retire.json").read_text())
    assert (retired["sequence"], retired["stage"], retired["timestamped"]) == (
        2, "retired", True)

    # the auditor's products, and the copy restored from the bundle
    report = (out / "report.html").read_text()
    assert report.lstrip().lower().startswith("<!doctype html") and "VERIFIED" in report
    assert (out / "model-audit.tar").is_file()
    assert json.loads((out / "restored" / "index.json").read_text())["manifests"]

    # lineage: the index the demo built says where the training data went, on verified
    # evidence, joining the provenance (train) and the ML-BOM (package) on the data's digest
    import hashlib

    data = hashlib.sha256((out / "data" / "train.csv").read_bytes()).hexdigest()
    res = subprocess.run([sys.executable, "-m", "modelseal.cli", "lineage", "--dataset",
                          f"sha256:{data}", "--db", f"sqlite:///{out / 'lineage.db'}",
                          "--verified-only", "--json"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    answers = json.loads(res.stdout)["models"]
    assert sorted((a["role"], a["step"], a["signer"], a["model"]["stage"]) for a in answers) == [
        ("bom", "package", "erin", "production"), ("train", "train", "bob", "production")]
    assert all(a["verified"] for a in answers)

    # the two lifecycle refusals, by rule (a copy of the state: verifying moves it forward)
    state = tmp_path / "state-copy"
    shutil.copytree(out / "state", state)
    r = _verify_json(out, env, f"oci:{out}/store:v1", state)
    assert [x.get("rule") for x in r["refusals"]] == [RULE_STAGE]
    r = _verify_json(out, env, f"oci:{out}/store-deleted:v1", state)
    assert [x.get("rule") for x in r["refusals"]] == [RULE_ROLLBACK]

    # the demo's trap stopped its TSA
    port = int(re.findall(r":(\d+)/", (out / "tsa.url").read_text())[0])
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
