"""The documented path must verify: the command blocks of docs/ci.md, docs/layouts.md and
docs/deployer.md marked ``<!-- modelseal:test -->`` are run, in that order and word for word,
in one shell, in a copy of docs/examples/workspace, against the real registry, with
``modelseal`` on PATH and ``$REGISTRY`` naming the registry. They must end VERIFIED.

The CI examples under docs/examples/ are checked to follow the same template."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from registry_server import RegistryServer

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = ("ci.md", "layouts.md", "deployer.md")
MARK = "<!-- modelseal:test -->"
TEMPLATE_STEPS = ["prepare-data", "train", "evaluate", "approve", "package"]


def marked_blocks(page: Path) -> list[str]:
    """The fenced ``sh`` blocks that directly follow the marker comment, in page order."""
    lines = page.read_text().splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == MARK:
            j = i + 1
            if j >= len(lines) or not lines[j].startswith("```sh"):
                raise AssertionError(f"{page.name}:{i + 1}: {MARK} is not followed by ```sh")
            end = lines.index("```", j + 1)
            blocks.append("\n".join(lines[j + 1:end]))
            i = end
        i += 1
    return blocks


def test_every_page_of_the_path_has_marked_blocks() -> None:
    for page in PAGES:
        assert marked_blocks(DOCS / page), f"docs/{page} has no {MARK} block"


def _shim(bin_dir: Path) -> None:
    """``modelseal`` on PATH: this interpreter, this checkout (PYTHONPATH is inherited)."""
    bin_dir.mkdir()
    exe = bin_dir / "modelseal"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m modelseal.cli "$@"\n')
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def test_documented_pipeline_ends_verified(registry: RegistryServer, tmp_path: Path) -> None:
    work = tmp_path / "work"
    shutil.copytree(DOCS / "examples" / "workspace", work)
    _shim(tmp_path / "bin")
    script = ["set -euo pipefail", "set -x"]
    for page in PAGES:
        script.append(f"# ---- docs/{page}")
        script.extend(marked_blocks(DOCS / page))
    (tmp_path / "docs.sh").write_text("\n".join(script) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSEAL_")}
    env.update({"PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
                "REGISTRY": registry.host, "MODELSEAL_CACHE_DIR": str(tmp_path / "cache"),
                "HOME": str(tmp_path / "home")})
    p = subprocess.run(["bash", str(tmp_path / "docs.sh")], cwd=work, env=env,
                       capture_output=True, text=True, timeout=300, check=False)
    log = f"stdout:\n{p.stdout}\nstderr (commands traced with set -x):\n{p.stderr}"
    assert p.returncode == 0, log
    assert "VERIFIED" in p.stdout and "REFUSED" not in p.stdout, log
    # the deployer pulled exactly the packaged files, and only those
    pulled = sorted(str(f.relative_to(work / "deploy" / "fraud"))
                    for f in (work / "deploy" / "fraud").rglob("*") if f.is_file())
    built = sorted(str(f.relative_to(work / "model")) for f in (work / "model").rglob("*")
                   if f.is_file())
    assert pulled == built


def _strings(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


def _commands(doc: object) -> list[str]:
    """`modelseal ...` invocations in the scripts of a loaded CI file, in file order,
    continuation lines joined."""
    out = []
    for text in _strings(doc):
        joined = re.sub(r"\\\n\s*", " ", text)
        out += [m.group(0) for m in re.finditer(r"(?m)^\s*(modelseal [^\n]*)", joined)]
    return [c.strip() for c in out]


@pytest.mark.parametrize("name", ["github-actions.yml", "gitlab-ci.yml"])
def test_ci_examples_follow_the_template(name: str) -> None:
    """Every step of ml-pipeline recorded, each by its own key, in the template's order;
    then push with the attestations, and verify against a policy before deploying."""
    text = (DOCS / "examples" / name).read_text()
    cmds = _commands(yaml.safe_load(text))
    steps = [m.group(1) for c in cmds if (m := re.search(r"run --step (\S+)", c))]
    assert steps == TEMPLATE_STEPS[:-1], steps  # package is recorded by push --signer
    signers = {}
    for c in cmds:
        m = re.search(r"run --step (\S+) --signer (\S+)", c)
        if m:
            signers[m.group(1)] = m.group(2)
    assert len(set(signers.values())) == len(signers), signers  # one functionary per step
    # the package step is signed by push, with --signer or MODELSEAL_SIGNER
    assert any(c.startswith("modelseal push ") and "--attestations" in c
               and ("--signer" in c or "MODELSEAL_SIGNER:" in text) for c in cmds)
    assert any(c.startswith("modelseal verify ") and "--policy" in c for c in cmds)
