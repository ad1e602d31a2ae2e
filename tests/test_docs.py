"""The documented path must verify: the command blocks of the pages in ``PAGES`` marked
``<!-- modelseal:test -->`` are run, in that order and word for word, in one shell, in a copy
of docs/examples/workspace, against the real parts: the registry fixture (``$REGISTRY``), the
OpenSSL RFC 3161 time-stamp authority (``$TSA``, its CA certificate copied to ``tsa-ca.pem``),
SoftHSM2 for PKCS#11, with ``modelseal`` on PATH. ci.md, layouts.md and deployer.md are one
path that must end VERIFIED; the other pages continue from it (its keys, model, policy).

Every other shell block of docs/*.md and README.md must be listed in ``EXEMPT`` with the
reason no test runs it word for word: a new untested command block fails the suite.

The CI examples under docs/examples/ are checked to follow the same template."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml

from modelseal.digest import hash_dir
from paths import missing_tool
from registry_server import RegistryServer
from tsa_server import TSAServer, tsa

__all__ = ["tsa"]

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# run in this order, in one shell; the first three are the path every later page continues
PAGES = ("ci.md", "layouts.md", "deployer.md", "auditor.md", "bom-and-safety.md",
         "model-signing-compat.md", "format.md", "lineage.md", "signing.md", "lifecycle.md")
MARK = "<!-- modelseal:test -->"
SHELL_FENCE = re.compile(r"^```(sh|bash|console|shell)\b")
TEMPLATE_STEPS = ["prepare-data", "train", "evaluate", "approve", "package"]

# shell blocks no test runs word for word: (page, first line of the block) -> why
EXEMPT = {
    ("README.md", "bash scripts/demo.sh    # the main job end to end on an OCI image-layout "
                  "directory (./demo-out)"):
        "scripts/demo.sh is run as a user runs it by tests/test_demo.py; scripts/test.sh runs "
        "this test suite, which a test cannot run",
    ("docs/ci.md", "cp -r docs/examples/workspace /tmp/fraud && cd /tmp/fraud"):
        "the setup the docs test does itself: a copy of the workspace, REGISTRY from the "
        "registry fixture",
}


def shell_blocks(page: Path) -> list[tuple[int, bool, str]]:
    """Every shell-fenced block of a page: (line number of the fence, marked, body)."""
    lines = page.read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        if SHELL_FENCE.match(line):
            end = lines.index("```", i + 1)
            marked = i > 0 and lines[i - 1].strip() == MARK
            out.append((i + 1, marked, "\n".join(lines[i + 1:end])))
    return out


def marked_blocks(page: Path) -> list[str]:
    """The shell blocks that directly follow the marker comment, in page order."""
    lines = page.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() == MARK and (i + 1 >= len(lines) or not SHELL_FENCE.match(lines[i + 1])):
            raise AssertionError(f"{page.name}:{i + 1}: {MARK} is not followed by a shell block")
    return [body for _, marked, body in shell_blocks(page) if marked]


def _doc_pages() -> list[Path]:
    return [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]


def test_every_page_of_the_path_has_marked_blocks() -> None:
    for page in PAGES:
        assert marked_blocks(DOCS / page), f"docs/{page} has no {MARK} block"


def test_every_command_block_is_run_or_exempt_with_a_reason() -> None:
    """A shell block a user may follow is run by the docs test, or EXEMPT says why not; a
    marked block on a page the test does not run would be a false promise."""
    seen = set()
    untested = []
    for page in _doc_pages():
        name = str(page.relative_to(ROOT))
        for lineno, marked, body in shell_blocks(page):
            first = body.splitlines()[0] if body else ""
            if marked:
                assert page.name in PAGES and page.parent == DOCS, \
                    f"{name}:{lineno} is marked but {name} is not in PAGES"
            elif (name, first) in EXEMPT:
                seen.add((name, first))
            else:
                untested.append(f"{name}:{lineno}: {first}")
    assert not untested, ("shell blocks no test runs (mark them " + MARK + ", or use a text "
                          "fence for output and synopses, or add them to EXEMPT with why):\n"
                          + "\n".join(untested))
    assert seen == set(EXEMPT), f"EXEMPT entries matching no block: {set(EXEMPT) - seen}"


def _shim(bin_dir: Path) -> None:
    """``modelseal`` on PATH: this interpreter, this checkout (PYTHONPATH is inherited)."""
    bin_dir.mkdir()
    exe = bin_dir / "modelseal"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m modelseal.cli "$@"\n')
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def test_documented_pages_run_and_the_path_ends_verified(
        registry: RegistryServer, tsa: TSAServer, tmp_path: Path) -> None:
    for tool in ("jq", "softhsm2-util", "openssl"):
        if shutil.which(tool) is None:
            missing_tool(tool)
    work = tmp_path / "work"
    shutil.copytree(DOCS / "examples" / "workspace", work)
    shutil.copy(tsa.ca_file, work / "tsa-ca.pem")
    _shim(tmp_path / "bin")
    script = ["set -euo pipefail", "set -x"]
    for page in PAGES:
        script.append(f"# ---- docs/{page}")
        script.extend(marked_blocks(DOCS / page))
        if page == "deployer.md":  # the end of the path
            script.append("echo PATH-VERIFIED")
    (tmp_path / "docs.sh").write_text("\n".join(script) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSEAL_")}
    env.update({"PATH": os.pathsep.join([str(tmp_path / "bin"), str(Path(sys.executable).parent),
                                         os.environ["PATH"]]),
                "VIRTUAL_ENV": sys.prefix,  # a user works in the virtualenv modelseal is in
                "REGISTRY": registry.host, "TSA": tsa.url,
                "MODELSEAL_CACHE_DIR": str(tmp_path / "cache"),
                "HOME": str(tmp_path / "home")})
    p = subprocess.run(["bash", str(tmp_path / "docs.sh")], cwd=work, env=env,
                       capture_output=True, text=True, timeout=300, check=False)
    log = f"stdout:\n{p.stdout}\nstderr (commands traced with set -x):\n{p.stderr}"
    (tmp_path / "docs.log").write_text(log)
    assert p.returncode == 0, log
    path_out = p.stdout.split("PATH-VERIFIED")[0]
    assert "VERIFIED" in path_out and "REFUSED" not in path_out, log
    # the deployer pulled exactly the packaged files, and only those
    pulled = sorted(str(f.relative_to(work / "deploy" / "fraud"))
                    for f in (work / "deploy" / "fraud").rglob("*") if f.is_file())
    built = sorted(str(f.relative_to(work / "model")) for f in (work / "model").rglob("*")
                   if f.is_file())
    assert pulled == built
    # format.md's coreutils pipeline printed the digest modelseal computes for data/
    assert f"{hash_dir(work / 'data').sha256}  -" in p.stdout, log
    # lifecycle.md: promoted by two (timestamped), deprecated, corrected, retired, refused
    history = json.loads((work / "history.json").read_text())
    assert history["status"] == "retired", history
    records = [e for e in history["events"] if e["what"].startswith("record ")]
    assert len(records) == 4 and len(records[0]["who"]) == 2, records
    assert records[0]["timeSource"] == "rfc3161", records
    assert "refused, exit code 10" in p.stdout, log


def _synopsis_lines(text: str) -> list[str]:
    """The ``modelseal ...`` lines of a block, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [re.sub(r"\s#.*", "", m.group(1))
            for m in re.finditer(r"(?m)^\s*(modelseal\s[^\n]*)", joined)]


def _fences(text: str) -> list[tuple[str, str]]:
    """Every fenced block of a Markdown page: (its language, or "", its body)."""
    out: list[tuple[str, str]] = []
    lang: str | None = None
    body: list[str] = []
    for line in text.splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, body = line[3:].strip(), []
            else:
                out.append((lang, "\n".join(body)))
                lang = None
        elif lang is not None:
            body.append(line)
    return out


def _unknown_words(line: str) -> list[str]:
    """What in a ``modelseal ...`` line is not a command or an option of the command named."""
    from modelseal.cli import main

    line = line.split(" -- ")[0]  # what follows is the wrapped command's
    cmd: click.Command = main
    options = {o for p in main.params for o in p.opts}
    for word in line.split()[1:]:
        if word.startswith("-"):
            continue
        sub = cmd.get_command(click.Context(cmd), word) if isinstance(cmd, click.Group) else None
        if sub is None:
            break
        cmd = sub
        options |= {o for p in cmd.params for o in p.opts}
    wrong = [f"no such command: {line}"] if isinstance(cmd, click.Group) else []
    unquoted = re.sub(r"\"[^\"]*\"|'[^']*'", "", line)  # values, $(...) substitutions
    return wrong + [f"{opt} is not an option of {cmd.name}: {line}"
                    for opt in re.findall(r"(?<![\w$-])(--?[a-zA-Z][\w-]*)", unquoted)
                    if opt not in options | {"-h", "--help"}]


def test_command_synopses_name_real_commands_and_options() -> None:
    """Blocks that are not run (synopses in text fences, exempt blocks) still name commands and
    options that exist: a renamed option fails here instead of on a reader's terminal. A fence
    without a language holds no commands (it would escape the checks above)."""
    wrong = []
    for page in _doc_pages():
        name = str(page.relative_to(ROOT))
        for lang, body in _fences(page.read_text()):
            if lang in ("text", "sh", "bash", "console", "shell"):
                wrong += [f"{name}: {w}" for ln in _synopsis_lines(body)
                          for w in _unknown_words(ln)]
            elif not lang:
                wrong += [f"{name}: commands in a fence without a language: {ln}"
                          for ln in _synopsis_lines(body)]
    assert not wrong, "\n".join(wrong)


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
    assert not [w for c in cmds for w in _unknown_words(c)]
