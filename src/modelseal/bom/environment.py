"""The training environment an ML-BOM lists: the Python distributions installed in a prefix,
venv or site-packages directory, with their licenses and RECORD file hashes."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelseal.errors import InputError


@dataclass(frozen=True)
class PyDist:
    name: str
    version: str
    license: str | None
    record_sha256: str | None
    files: tuple[tuple[str, str], ...]  # (path, sha256 hex) from RECORD


def site_packages_of(env: Path) -> list[Path]:
    """The site-packages directories of a Python environment (a prefix such as ``sys.prefix``
    or a venv, or a site-packages directory itself)."""
    env = Path(env)
    if not env.is_dir():
        raise InputError(f"environment {env} does not exist or is not a directory")

    def has_dists(d: Path) -> bool:
        return any(d.glob("*.dist-info")) or any(d.glob("*.egg-info"))

    if has_dists(env):
        return [env]
    cands = [*env.glob("lib/python3*/site-packages"), *env.glob("lib64/python3*/site-packages"),
             *env.glob("lib/python3*/dist-packages"), env / "Lib" / "site-packages"]
    found = [d for d in cands if d.is_dir() and has_dists(d)]
    if not found:
        raise InputError(
            f"{env} is not a Python environment: no site-packages with installed distributions",
            hint="give a prefix such as sys.prefix or a venv, or a site-packages directory")
    return sorted(set(found))


def _license_of(meta: Any) -> str | None:
    expr = meta.get("License-Expression")
    if expr:
        return str(expr).strip()
    lic = meta.get("License")
    if lic and "\n" not in str(lic).strip() and len(str(lic)) <= 100 and \
            str(lic).strip().upper() != "UNKNOWN":
        return str(lic).strip()
    for c in meta.get_all("Classifier") or []:
        if str(c).startswith("License ::") and str(c).split("::")[-1].strip() != "OSI Approved":
            return str(c).split("::")[-1].strip()
    return None


def python_distributions(env: Path) -> list[PyDist]:
    """Every installed distribution of ``env`` with license and RECORD file hashes."""
    import importlib.metadata as md

    seen: dict[str, PyDist] = {}
    for sp in site_packages_of(env):
        for d in md.distributions(path=[str(sp)]):
            name = d.name
            if not name or name.lower() in seen:
                continue
            files: list[tuple[str, str]] = []
            for f in d.files or []:
                if f.hash is not None and f.hash.mode == "sha256":
                    raw = base64.urlsafe_b64decode(f.hash.value + "=" * (-len(f.hash.value) % 4))
                    files.append((str(f).replace("\\", "/"), raw.hex()))
            rec = d.read_text("RECORD")
            rec_sha = hashlib.sha256(rec.encode("utf-8")).hexdigest() if rec else None
            seen[name.lower()] = PyDist(str(name), str(d.version), _license_of(d.metadata),
                                        rec_sha, tuple(sorted(files)))
    return sorted(seen.values(), key=lambda p: p.name.lower())

