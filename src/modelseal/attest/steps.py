"""Recording a pipeline step: hash materials, run the command, hash products, sign a link.

What ``modelseal run`` does, callable from Python with the same arguments. Paths are recorded
relative to ``base_dir``, ``/``-separated; directories are walked recursively; exclude patterns
are gitignore-style, as in-toto-run's ``--exclude``. Attestation files are written atomically
(temp file, fsync, rename): a crash never leaves a half-written attestation.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from modelseal._util.fs import PathExcluder, exclude_patterns, walk_files
from modelseal.attest.output import DEFAULT_ATTESTATIONS_DIR, check_step_name, sign_and_write
from modelseal.attest.payload import Subject
from modelseal.attest.statement import link_statement, resource_descriptor
from modelseal.digest import DIR_DIGEST_SCHEME, DigestCache, hash_dir, hash_files
from modelseal.errors import InputError, UsageError

if TYPE_CHECKING:
    from securesystemslib.signer import Signer

MAX_STREAM = 1024 * 1024  # bytes of stdout/stderr kept in the attestation


class CommandNotFoundError(InputError):
    """The step's command does not exist (exit code 127, as a shell reports it)."""

    exit_code = 127


class CommandNotExecutableError(InputError):
    """The step's command exists but cannot be executed (exit code 126, as a shell)."""

    exit_code = 126


class StepRecord(NamedTuple):
    returncode: int
    statement: dict[str, Any]


@dataclass
class SignedStep:
    """A recorded, signed step."""

    returncode: int
    statement: dict[str, Any]
    attestation: Path
    keyid: str | None


def _rel(path: Path, base: Path) -> str:
    try:
        rel = path.relative_to(base)
    except ValueError:
        # outside base_dir: recorded as given, like in-toto does with absolute paths
        return path.as_posix()
    return rel.as_posix() or "."


def collect_files(
    paths: Iterable[str | os.PathLike[str]],
    *,
    base_dir: str | os.PathLike[str] | None = None,
    exclude: Sequence[str] = (),
    default_excludes: bool = True,
    missing_ok: bool = False,
) -> list[tuple[str, Path]]:
    """Expand files and directories into sorted (recorded name, path) pairs.

    A path named here may be a symlink (it is followed); inside a directory the walk is
    :func:`modelseal._util.fs.walk_files`: links are followed only when they stay inside that
    directory, and a link out of it, a broken link, a loop, a device, FIFO or socket, or
    anything that cannot be read is an InputError.
    """
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    base_abs = Path(os.path.abspath(base))
    patterns = exclude_patterns(exclude, default_excludes=default_excludes)
    ex = PathExcluder(patterns)
    found: dict[str, Path] = {}
    for p in paths:
        path = Path(p)
        full = path if path.is_absolute() else base / path
        rel = _rel(Path(os.path.abspath(full)), base_abs)
        try:
            st = full.stat()
        except FileNotFoundError as e:
            if full.is_symlink():
                raise InputError(f"{full} is a broken symlink") from e
            if missing_ok:
                continue
            raise InputError(f"{p} does not exist") from e
        except OSError as e:
            raise InputError(f"cannot read {full}: {e.strerror or e}") from e
        if stat.S_ISDIR(st.st_mode):
            # the one walker: links followed only inside the directory named
            for f in walk_files(full, exclude=patterns, follow_symlinks=True,
                                prefix="" if rel == "." else rel + "/"):
                found[f.relpath] = f.path
        elif stat.S_ISREG(st.st_mode):
            if not ex.file(rel):
                found[rel] = full
        else:
            raise InputError(f"{p} is neither a file nor a directory")
    return sorted(found.items())


def hash_artifacts(
    paths: Iterable[str | os.PathLike[str]],
    *,
    base_dir: str | os.PathLike[str] | None = None,
    exclude: Sequence[str] = (),
    default_excludes: bool = True,
    missing_ok: bool = False,
    cache: DigestCache | None = None,
) -> list[Subject]:
    """(recorded name, sha256 hex) of every file under ``paths``, hashed in parallel."""
    files = collect_files(paths, base_dir=base_dir, exclude=exclude,
                          default_excludes=default_excludes, missing_ok=missing_ok)
    digests = hash_files([p for _, p in files], cache=cache)
    return [(name, d.sha256) for (name, _), d in zip(files, digests, strict=True)]


def describe_path(
    path: str | os.PathLike[str],
    *,
    base_dir: str | os.PathLike[str] | None = None,
    exclude: Sequence[str] = (),
    default_excludes: bool = True,
    cache: DigestCache | None = None,
) -> dict[str, Any]:
    """An in-toto ResourceDescriptor for a file or directory (a dataset, a base model, a
    metrics file), named by its path relative to ``base_dir`` (default: the working directory).

    A file gets its sha256. A directory gets the one directory digest,
    :data:`modelseal.digest.DIR_DIGEST_SCHEME` (the digest the ML-BOM gives the same
    directory), with ``annotations`` ``{"files": N, "hashScheme": DIR_DIGEST_SCHEME}``.
    """
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    full = Path(path) if Path(path).is_absolute() else base / path
    if not full.is_dir():
        files = hash_artifacts([path], base_dir=base, exclude=exclude,
                               default_excludes=default_excludes, cache=cache)
        if not files:
            raise InputError(f"{path} is left out by the exclude patterns: nothing to describe")
        name, sha = files[0]
        return resource_descriptor(name, sha)
    found = hash_dir(full, exclude=exclude_patterns(exclude, default_excludes=default_excludes),
                     cache=cache)
    name = _rel(Path(os.path.abspath(full)), Path(os.path.abspath(base)))
    return resource_descriptor(name, found.sha256,
                               annotations={"files": len(found.files),
                                            "hashScheme": DIR_DIGEST_SCHEME})


def _pump(src: IO[bytes], sink: IO[bytes] | None, keep: list[bytes]) -> None:
    kept = 0
    for chunk in iter(lambda: src.read1(65536) if hasattr(src, "read1") else src.read(65536),
                      b""):
        if sink is not None:
            sink.write(chunk)
            sink.flush()
        if kept < MAX_STREAM:
            keep.append(chunk[:MAX_STREAM - kept])
            kept += len(keep[-1])
    src.close()


def run_command(
    command: Sequence[str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    capture_output: bool = False,
    tee_stdout: IO[bytes] | None = None,
    tee_stderr: IO[bytes] | None = None,
    stdout_to_stderr: bool = False,
) -> tuple[int, bytes | None, bytes | None]:
    """Run ``command`` without a shell: (returncode, stdout, stderr).

    With ``capture_output`` the streams are recorded (the first MiB of each) and also copied
    to ``tee_stdout``/``tee_stderr`` as they come, so a long job still shows its progress.
    A signal death is reported as 128 + the signal number, as shells do. With
    ``stdout_to_stderr`` (uncaptured) the command's stdout goes to our stderr, so that our own
    stdout carries only modelseal's JSON.
    """
    if not command:
        raise UsageError("no command given", hint="modelseal run --step NAME ... -- CMD ARGS")
    try:
        if not capture_output:
            proc = subprocess.run(list(command), cwd=cwd, check=False,
                                  stdout=sys.stderr.fileno() if stdout_to_stderr else None)
            rc, out, err = proc.returncode, None, None
        else:
            with subprocess.Popen(list(command), cwd=cwd, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE) as p:
                assert p.stdout is not None and p.stderr is not None
                outs: list[bytes] = []
                errs: list[bytes] = []
                threads = [threading.Thread(target=_pump, args=(p.stdout, tee_stdout, outs)),
                           threading.Thread(target=_pump, args=(p.stderr, tee_stderr, errs))]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                rc = p.wait()
            out, err = b"".join(outs), b"".join(errs)
    except FileNotFoundError as e:
        raise CommandNotFoundError(f"command not found: {command[0]}",
                                   hint="check the command after `--` and your PATH") from e
    except PermissionError as e:
        raise CommandNotExecutableError(f"command cannot be executed: {command[0]}: "
                                        f"{e.strerror or e}") from e
    except OSError as e:
        raise CommandNotExecutableError(f"cannot run {command[0]}: {e.strerror or e}") from e
    if rc < 0:
        rc = 128 - rc
    return rc, out, err


def record_step(
    name: str,
    command: Sequence[str],
    materials: Sequence[str | os.PathLike[str]] = (),
    products: Sequence[str | os.PathLike[str]] = (),
    *,
    exclude: Sequence[str] = (),
    default_excludes: bool = True,
    base_dir: str | os.PathLike[str] | None = None,
    capture_output: bool = False,
    env_keys: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    cache: DigestCache | None = None,
    tee_stdout: IO[bytes] | None = None,
    tee_stderr: IO[bytes] | None = None,
    stdout_to_stderr: bool = False,
) -> StepRecord:
    """Hash materials, run ``command`` (in ``base_dir``), hash products; the link Statement.

    Products that do not exist after a failed command are left out; after a successful one
    they are an InputError (a typo would otherwise sign an empty step).
    """
    check_step_name(name)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    kw: dict[str, Any] = {"base_dir": base, "exclude": exclude,
                          "default_excludes": default_excludes, "cache": cache}
    mats = hash_artifacts(materials, **kw)
    rc, out, err = run_command(command, cwd=base, capture_output=capture_output,
                               tee_stdout=tee_stdout, tee_stderr=tee_stderr,
                               stdout_to_stderr=stdout_to_stderr)
    prods = hash_artifacts(products, missing_ok=rc != 0, **kw)
    byproducts: dict[str, Any] = {"return-value": rc}
    if capture_output:
        byproducts["stdout"] = (out or b"").decode("utf-8", errors="replace")
        byproducts["stderr"] = (err or b"").decode("utf-8", errors="replace")
    env = os.environ if environ is None else environ
    environment = {k: env[k] for k in env_keys if k in env}
    return StepRecord(rc, link_statement(name, command, mats, prods, byproducts, environment))


def run_step(
    name: str,
    command: Sequence[str],
    signer: Signer,
    *,
    materials: Sequence[str | os.PathLike[str]] = (),
    products: Sequence[str | os.PathLike[str]] = (),
    attestations_dir: str | os.PathLike[str] | None = None,
    **record_kw: Any,
) -> SignedStep:
    """Record a step and sign its link; the signed bundle is written to ``attestations_dir``.

    The signer must be loaded first (see ``load_signer``), so a bad key fails before the
    command runs. A command that is not found raises CommandNotFoundError and writes nothing.
    """
    from modelseal.attest.signers import is_keyless

    check_step_name(name)
    rc, st = record_step(name, command, materials, products, **record_kw)
    kid = None if is_keyless(signer) else str(signer.public_key.keyid)
    base = Path(record_kw.get("base_dir") or Path.cwd())
    out_dir = Path(attestations_dir) if attestations_dir is not None else (
        base / DEFAULT_ATTESTATIONS_DIR)
    return SignedStep(rc, st, sign_and_write(st, signer, name, directory=out_dir).path, kid)
