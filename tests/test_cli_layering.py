"""The CLI's walls: command modules import ``cli.options``, ``cli.render`` and the library,
never the entry point nor each other; nothing below the CLI imports it; ``modelseal --help``
imports only click and the package root (it must stay fast)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "modelseal"
SHARED = {"modelseal.cli.options", "modelseal.cli.render"}


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (lazy imports inside functions too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def test_command_modules_import_neither_the_entry_point_nor_each_other() -> None:
    commands = sorted((SRC / "cli" / "commands").glob("*_cmds.py"))
    assert len(commands) >= 8
    for path in commands:
        cli = {m for m in _imports(path) if m == "modelseal.cli" or m.startswith("modelseal.cli.")}
        assert cli <= SHARED | {f"{m}.{n}" for m in SHARED for n in _names(m)}, (path.name, cli)


def _names(module: str) -> set[str]:
    path = SRC / "cli" / f"{module.rsplit('.', 1)[1]}.py"
    tree = ast.parse(path.read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}


def test_nothing_below_the_cli_imports_it() -> None:
    for path in SRC.rglob("*.py"):
        if path.is_relative_to(SRC / "cli"):
            continue
        cli = [m for m in _imports(path) if m == "modelseal.cli" or m.startswith("modelseal.cli.")]
        assert not cli, (str(path.relative_to(SRC)), cli)


def test_help_imports_only_click_and_the_package_root() -> None:
    probe = ("import sys; from modelseal.cli import main\n"
             "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             "print('MODULES', *sorted(m for m in sys.modules if '_' not in m[:1]))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=True)
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("MODULES ")]
    loaded = set(line.split()[1:])
    assert {m for m in loaded if m.startswith("modelseal")} == {
        "modelseal", "modelseal.cli", "modelseal.cli.commands"}
    heavy = {"rich", "requests", "oras", "securesystemslib", "sigstore", "cyclonedx", "yaml",
             "json"}
    assert not {m.split(".")[0] for m in loaded} & heavy, sorted(loaded)
