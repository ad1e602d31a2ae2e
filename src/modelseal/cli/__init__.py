"""The ``modelseal`` command line: parse, call the library, print.

Commands from other modules are loaded lazily (``LAZY_COMMANDS``) so that ``modelseal --help``
stays fast. People get rich tables on stdout and progress bars on a terminal's stderr;
machines get ``--json`` and exit codes (docs/exit-codes.md).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

# name -> ("module:attribute" of a click command, one-line help), imported only when used.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "keygen": ("modelseal.cli.commands.attest_cmds:keygen", "Create a signing key pair."),
    "run": ("modelseal.cli.commands.attest_cmds:run",
            "Run a pipeline step and sign an in-toto link attestation for it."),
    "attest": ("modelseal.cli.commands.attest_cmds:attest",
               "Sign an attestation (provenance, evaluation, any predicate)."),
    "attach": ("modelseal.cli.commands.oci_cmds:attach",
               "Attach attestations to a model as OCI referrers."),
    "attestations": ("modelseal.cli.commands.oci_cmds:attestations",
                     "List (and download) the attestations attached to a model."),
    "bom": ("modelseal.cli.commands.bom_cmds:bom", "Build a CycloneDX ML-BOM for a model."),
    "scan": ("modelseal.cli.commands.bom_cmds:scan",
            "Scan model files for code-executing formats."),
    "layout": ("modelseal.cli.commands.verify_cmds:layout",
               "Create, sign and check in-toto layouts."),
    "verify": ("modelseal.cli.commands.verify_cmds:verify",
               "Verify a model against a policy before rollout."),
    "promote": ("modelseal.cli.commands.lifecycle_cmds:promote", "Promote a model to a stage."),
    "deprecate": ("modelseal.cli.commands.lifecycle_cmds:deprecate", "Deprecate a model."),
    "retire": ("modelseal.cli.commands.lifecycle_cmds:retire", "Retire a model for good."),
    "correct": ("modelseal.cli.commands.lifecycle_cmds:correct", "Correct a model's metadata."),
    "history": ("modelseal.cli.commands.lifecycle_cmds:history", "A model's story in time order."),
    "copy": ("modelseal.cli.commands.audit_cmds:copy", "Copy a model with every referrer."),
    "bundle": ("modelseal.cli.commands.audit_cmds:bundle",
              "Export and verify offline audit bundles."),
    "audit": ("modelseal.cli.commands.audit_cmds:audit", "Write an auditor's report (HTML, JSON)."),
    "index": ("modelseal.cli.commands.index_cmds:index", "Index registries' evidence for lineage."),
    "lineage": ("modelseal.cli.commands.index_cmds:lineage", "Lineage of a dataset or a model."),
    "search": ("modelseal.cli.commands.index_cmds:search", "Search the evidence index."),
}


class LazyGroup(click.Group):
    """A group whose subcommands live in other modules and load on first use."""

    def _available(self) -> dict[str, tuple[str, str]]:
        out = {}
        for name, (target, help_) in LAZY_COMMANDS.items():
            try:
                found = importlib.util.find_spec(target.split(":")[0]) is not None
            except ModuleNotFoundError:
                found = False
            if found:
                out[name] = (target, help_)
        return out

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._available()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            return cmd
        entry = self._available().get(cmd_name)
        if entry is None:
            return None
        module, _, attr = entry[0].partition(":")
        loaded = getattr(importlib.import_module(module), attr, None)
        return loaded if isinstance(loaded, click.Command) else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Static help for lazy commands: listing them must not import them.
        lazy = self._available()
        rows = []
        for name in self.list_commands(ctx):
            if name in lazy and name not in self.commands:
                rows.append((name, lazy[name][1]))
            else:
                cmd = self.commands[name]
                rows.append((name, cmd.get_short_help_str(limit=formatter.width)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


_signalled: list[int] = []  # the first SIGINT/SIGTERM received, if any
INTERRUPT_GRACE = 3.0  # seconds cleanup may take after Ctrl-C before the process just ends


def _interrupt_code() -> int:
    """130 after SIGINT (Ctrl-C), 143 after SIGTERM (CI runners, Kubernetes)."""
    return 128 + (_signalled[0] if _signalled else 2)


def _on_signal(signum: int, frame: Any) -> None:
    """SIGINT and SIGTERM alike: stop network work in every thread now (shut open
    connections, wake back-offs), raise KeyboardInterrupt in the main thread so cleanup runs
    (upload sessions cancelled, staging removed); a second signal, or cleanup that outlives
    the grace period, ends the process at once."""
    import os
    import threading

    from modelseal._util import network

    if _signalled:
        os._exit(_interrupt_code())
    _signalled.append(signum)
    network.cancel()

    def watchdog() -> None:
        import time

        time.sleep(INTERRUPT_GRACE)
        sys.stderr.write("interrupted\n")
        os._exit(_interrupt_code())

    threading.Thread(target=watchdog, name="modelseal-interrupt", daemon=True).start()
    raise KeyboardInterrupt


class _MainGroup(LazyGroup):
    """The entry point: signal handling around every command, exit 130/143 on interrupt."""

    def invoke(self, ctx: click.Context) -> Any:
        import signal
        import threading

        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, _on_signal)
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:  # a command that does not go through errors_to_exit
            click.echo("interrupted", err=True)
            sys.exit(_interrupt_code())
        except SystemExit as e:
            if e.code == 130 and _signalled:
                sys.exit(_interrupt_code())
            raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


@click.group(cls=_MainGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="modelseal")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
              envvar="MODELSEAL_TIMEOUT", show_envvar=True, metavar="SECONDS",
              help="Registry network timeout: connecting, and waiting for each answer or "
                   "block of data (default 30). See docs/network.md.")
@click.option("--deadline", type=click.FloatRange(min=0, min_open=True),
              envvar="MODELSEAL_DEADLINE", show_envvar=True, metavar="SECONDS",
              help="Give up on registry work after this long in total (default: no bound).")
def main(timeout: float | None = None, deadline: float | None = None) -> None:
    """modelseal: package, attest, verify and audit machine-learning models.

    REF is HOST[:PORT]/REPO[:TAG|@DIGEST] for a registry, or oci:PATH[:TAG|@DIGEST] for an
    OCI image-layout directory on disk (the embedded default).
    """
    from modelseal._util import network

    network.configure(timeout=timeout, deadline=deadline)


# ---- shared plumbing ---------------------------------------------------------------------

def registry_options(f: F) -> F:
    """Options every command that talks to a registry takes."""
    f = click.option("--insecure", is_flag=True,
                     help="Use plain HTTP for a registry other than localhost/127.0.0.1.")(f)
    f = click.option("--ca-file", type=click.Path(exists=True, dir_okay=False),
                     envvar="MODELSEAL_CA_FILE",
                     help="CA bundle (PEM) for a registry with a private TLS certificate.")(f)
    f = click.option("--username", envvar="MODELSEAL_REGISTRY_USERNAME",
                     help="Registry user (default: Docker config / credential helpers).")(f)
    f = click.option("--password-stdin", is_flag=True,
                     help="Read the registry password from standard input.")(f)
    return f


def tsa_option(f: F) -> F:
    """``--tsa URL`` (env MODELSEAL_TSA) for a command that signs: every keyed signature the
    command makes is countersigned by that RFC 3161 Time-Stamp Authority."""

    def enable(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        from modelseal.attest.tsa import TSAClient, timestamping, tsa_url

        with errors_to_exit(False):
            url = tsa_url(value)
        if url:
            ctx.with_resource(timestamping(TSAClient(url)))

    return click.option("--tsa", metavar="URL", expose_value=False, callback=enable,
                        help="RFC 3161 Time-Stamp Authority that countersigns each keyed "
                             "signature (env MODELSEAL_TSA).")(f)


def store_kwargs(kw: dict[str, Any]) -> dict[str, Any]:
    """Registry options from parsed CLI arguments (pops them from ``kw``)."""
    import os

    password = os.environ.get("MODELSEAL_REGISTRY_PASSWORD")
    if kw.pop("password_stdin", False):
        password = sys.stdin.readline().rstrip("\r\n")
    return {"insecure": kw.pop("insecure", False) or None, "ca_file": kw.pop("ca_file", None),
            "username": kw.pop("username", None), "password": password}


def open_ref(text: str, opts: dict[str, Any], default_tag: str | None = "latest") -> Any:
    """(Ref, Store) for a reference given on the command line."""
    from modelseal.oci import open_store
    from modelseal.refs import parse_ref

    ref = parse_ref(text, default_tag=default_tag)
    return ref, open_store(ref, **opts)


def console(stderr: bool = False) -> Any:
    """A rich console; wide when output goes to a file or pipe, so digests stay whole."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 200
    return Console(stderr=stderr, highlight=False, width=width)


# Terminal control characters (ESC sequences can conceal text or move the cursor; CR can
# overwrite a line) and bidirectional overrides (which reorder what is shown): from
# untrusted text they are shown as \xNN / \uNNNN escapes. Newline and tab stay.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _visible(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def escape(text: str) -> str:
    """``text`` (a path, a digest, anything from a registry or a file) made safe to print
    with rich: shown as written, never interpreted as markup or as terminal control."""
    from rich.markup import escape as rich_escape

    return rich_escape(_UNPRINTABLE.sub(_visible, text))


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True))


@contextmanager
def errors_to_exit(json_mode: bool = False) -> Iterator[None]:
    """Turn modelseal's errors into a message on stderr and the error's exit code."""
    from modelseal.errors import ModelsealError

    try:
        yield
    except ModelsealError as e:
        if json_mode:
            click.echo(json.dumps({"error": e.message, "hint": e.hint,
                                   "type": type(e).__name__,
                                   "reasons": getattr(e, "reasons", [e.message])}), err=True)
        else:
            err = console(stderr=True)
            err.print(f"[bold red]error:[/] {escape(e.message)}", soft_wrap=True)
            for reason in getattr(e, "reasons", []):
                if reason != e.message:
                    err.print(f"  - {escape(reason)}", soft_wrap=True)
            if e.hint:
                err.print(f"  hint: {escape(e.hint)}", soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


def make_progress(json_mode: bool) -> Any:
    """A rich progress bar on a terminal; nothing in --json mode or when piped."""
    from modelseal.transfer import Progress

    if json_mode or not sys.stderr.isatty():
        return Progress()
    return RichProgress()


class RichProgress:
    """Byte progress bars for hashing and transfers (thread-safe advance)."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._p = Progress(TextColumn("{task.description:>11}"), BarColumn(), DownloadColumn(),
                           TransferSpeedColumn(), TimeRemainingColumn(),
                           console=console(stderr=True), transient=True)
        self._task: Any = None

    def start(self, label: str, total: int) -> Callable[[int], None]:
        self._p.start()
        task = self._task = self._p.add_task(label, total=total)
        return lambda n: self._p.advance(task, n)

    def finish(self) -> None:
        self._p.stop()


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


# ---- push / pull / inspect -----------------------------------------------------------------

@main.command()
@click.argument("model_dir", type=click.Path(file_okay=False, path_type=str))
@click.argument("ref")
@click.option("--name", help="Model name (ModelPack descriptor.name).")
@click.option("--version", "model_version", help="Model version.")
@click.option("--family", help="Model family, e.g. llama.")
@click.option("--architecture", help="Architecture, e.g. transformer.")
@click.option("--format", "model_format", help="Weights format, e.g. safetensors, gguf.")
@click.option("--param-size", help="Parameter count, e.g. 8b.")
@click.option("--precision", help="Precision, e.g. bf16.")
@click.option("--quantization", help="Quantization, e.g. awq.")
@click.option("--metadata", "metadata_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML/JSON file with descriptor/config fields (flags win).")
@click.option("--annotation", "annotations", multiple=True, metavar="KEY=VALUE",
              help="Extra manifest annotation (repeatable).")
@click.option("--media-type", "role_overrides", multiple=True, metavar="GLOB=ROLE",
              help="Force a file role: weight, weight.config, doc, code, dataset.")
@click.option("--allow-retag", is_flag=True,
              help="Allow moving an existing tag to different content.")
@click.option("--follow-symlinks", is_flag=True,
              help="Record the content of symlinks that stay inside the model directory.")
@click.option("--no-cache", is_flag=True, help="Re-hash every file (ignore the digest cache).")
@click.option("--exclude", multiple=True, metavar="PATTERN",
              help="gitignore-style pattern of files to leave out (repeatable).")
@click.option("--no-default-excludes", is_flag=True,
              help="Also package .git, .modelseal, __pycache__, *.pyc and .DS_Store.")
@tsa_option
@click.option("--signer", envvar="MODELSEAL_SIGNER", metavar="URI|PATH",
              help="Sign the package step (in-toto link + model-signing signature) "
              "with this key file or signer URI (env MODELSEAL_SIGNER).")
@click.option("--attestations", "attestations_dir", type=click.Path(exists=True),
              help="Attach every bundle in this directory (e.g. .modelseal/attestations); "
                   "bundles already attached are skipped.")
@click.option("--json", "json_mode", is_flag=True, help="Machine-readable output.")
@registry_options
def push(model_dir: str, ref: str, json_mode: bool, **kw: Any) -> None:
    """Package MODEL_DIR as a ModelPack artifact and push it to REF."""
    with errors_to_exit(json_mode):
        from modelseal._util.fs import exclude_patterns
        from modelseal.digest import DigestCache, default_cache_path
        from modelseal.errors import UsageError
        from modelseal.modelpack import ModelMetadata, parse_role_overrides
        from modelseal.transfer import push as do_push

        opts = store_kwargs(kw)
        md = ModelMetadata.load(kw["metadata_file"]) if kw["metadata_file"] else ModelMetadata()
        flags = {"name": kw["name"], "version": kw["model_version"], "family": kw["family"]}
        cfg = {"architecture": kw["architecture"], "format": kw["model_format"],
               "paramSize": kw["param_size"], "precision": kw["precision"],
               "quantization": kw["quantization"]}
        anns = {}
        for a in kw["annotations"]:
            k, sep, v = a.partition("=")
            if not sep or not k:
                raise UsageError(f"annotation {a!r}: write KEY=VALUE")
            anns[k] = v
        md = md.merged(ModelMetadata({k: v for k, v in flags.items() if v},
                                     {k: v for k, v in cfg.items() if v}, anns))
        if "name" not in md.descriptor:
            from pathlib import Path

            md.descriptor["name"] = Path(model_dir).resolve().name
        r, store = open_ref(ref, opts)
        signer = None
        skipped: dict[str, str] = {}
        if kw["signer"]:
            from modelseal.attest.signers import load_signer
            from modelseal.attestations import package_step_capabilities

            signer = load_signer(kw["signer"])  # before any upload: a bad key fails early
            # and what it cannot sign is known before any upload too: sign the rest
            skipped = package_step_capabilities(signer)
            for name, why in skipped.items():
                click.echo(f"warning: {name} not signed: {why}", err=True)
        bundles: list[tuple[str, bytes]] = []
        if kw["attestations_dir"]:
            from modelseal.attestations import bundle_files, read_bundles

            # read and checked before any upload: a bad bundle fails the push early
            bundles = read_bundles(bundle_files([kw["attestations_dir"]]))
        cache = None if kw["no_cache"] else DigestCache(default_cache_path())
        excludes = exclude_patterns(kw["exclude"], default_excludes=not kw["no_default_excludes"])
        result = do_push(model_dir, store, r, md,
                         role_overrides=parse_role_overrides(kw["role_overrides"]),
                         allow_retag=kw["allow_retag"], follow_symlinks=kw["follow_symlinks"],
                         cache=cache, progress=make_progress(json_mode), exclude=excludes)
        outcomes = _attach_after_push(store, result, signer, bundles, model_dir, ref, md,
                                      kw["attestations_dir"], excludes)
        attached = list(dict.fromkeys(o.digest for o in outcomes if not o.already_attached))
        already = list(dict.fromkeys(o.digest for o in outcomes if o.already_attached))
        if json_mode:
            emit_json({**result.to_dict(), "attached": attached, "alreadyAttached": already,
                       "skipped": [{"file": k, "reason": v} for k, v in skipped.items()]})
        else:
            c = console()
            for note in result.notes:  # temporaries an interrupted earlier push left
                console(stderr=True).print(f"note: {note}", soft_wrap=True, markup=False)
            state = "unchanged" if result.unchanged else (
                f"{result.uploaded_blobs} blobs uploaded ({human_size(result.uploaded_bytes)})")
            c.print(f"pushed {result.files} files ({human_size(result.bytes_total)}), {state}")
            c.print(f"{r.base}@{result.digest}", soft_wrap=True)
            if attached or already:
                c.print(f"{len(attached)} attestations attached"
                        + (f", {len(already)} already attached" if already else ""))


def _attach_after_push(store: Any, result: Any, signer: Any, bundles: list[tuple[str, bytes]],
                       model_dir: str, ref: str, md: Any,
                       attestations_dir: str | None, excludes: list[str]) -> list[Any]:
    """Attach attestations and sign the package step, each only when not attached already
    (a CI retry adds nothing); returns the AttachOutcomes."""
    if signer is None and not bundles:
        return []
    from pathlib import Path

    from modelseal.attest.bundle import parse_bundle
    from modelseal.attest.steps import DEFAULT_ATTESTATIONS_DIR, write_attestation
    from modelseal.attestations import (
        AttachedBundles,
        attach_bundle,
        attach_bundles_once,
        excluded_paths,
        plan_package_step,
        sign_planned,
        subject_of,
    )
    from modelseal.transfer import fetch_model_manifest

    subject = subject_of(store, result.digest)
    given = bundles
    plan = None
    if signer is not None:
        if result.unchanged:  # sign what is in the store, not what we would have written
            from modelseal.refs import parse_ref

            files = fetch_model_manifest(store, parse_ref(ref).with_digest(result.digest)).layers
        else:
            files = result.manifest.layers
        # model_signing verify of MODEL_DIR itself must skip what push left out
        plan = plan_package_step(files, signer, command=["modelseal", "push", model_dir, ref],
                                 model_name=str(md.descriptor.get("name", "model")),
                                 ignore_paths=excluded_paths(model_dir, excludes))
    types: list[str | None] = []
    for _source, data in given:
        try:
            types.append(parse_bundle(data).predicate_type)
        except Exception:  # attach_bundles_once names the file
            types.append(None)
    if plan is not None:
        types += [st.get("predicateType") for st in plan.statements.values()]
    existing = AttachedBundles(store, subject.digest, types)
    out = attach_bundles_once(store, subject, given, existing)
    if plan is not None:
        from modelseal.attestations import AttachOutcome

        sig_dir = Path(attestations_dir or DEFAULT_ATTESTATIONS_DIR)
        for name, st in plan.statements.items():
            there = existing.signed_by(st, signer)
            if there is not None:  # signed and attached by this signer before: not again
                out.append(AttachOutcome(there.digest, None, name, True))
                continue
            data = sign_planned(name, st, signer)
            write_attestation(data, sig_dir / name)
            a = attach_bundle(store, subject, data, name)
            existing.add(a.descriptor, data)
            out.append(AttachOutcome(a.descriptor.digest, a.tag, name, False))
    return out


@main.command()
@click.argument("ref")
@click.argument("target_dir", type=click.Path(path_type=str))
@click.option("--overwrite", is_flag=True, help="Replace files that already exist in TARGET_DIR.")
@click.option("--policy", "policy_file", type=click.Path(exists=True, dir_okay=False),
              help="Verify against this deployer policy first; pull only what was verified.")
@click.option("--state", "state_dir", type=click.Path(file_okay=False), envvar="MODELSEAL_STATE",
              help="With --policy: where lifecycle heads are remembered (env MODELSEAL_STATE).")
@click.option("--json", "json_mode", is_flag=True, help="Machine-readable output.")
@registry_options
def pull(ref: str, target_dir: str, overwrite: bool, policy_file: str | None,
         state_dir: str | None, json_mode: bool, **kw: Any) -> None:
    """Pull the model at REF into TARGET_DIR, checking every blob's digest.

    Nothing is written to TARGET_DIR unless every file arrived intact (and, with --policy,
    unless the model verified: exit code 10 otherwise).
    """
    with errors_to_exit(json_mode):
        from modelseal.transfer import pull as do_pull

        opts = store_kwargs(kw)
        r, store = open_ref(ref, opts)
        verified = None
        if policy_file:
            from modelseal.verify.pipeline import pull_verified
            from modelseal.verify.policy import load_policy

            policy = load_policy(policy_file)
            state = None
            if policy.lifecycle is not None:
                from modelseal.lifecycle.state import StateStore

                state = StateStore(state_dir)
            verified, result = pull_verified(store, r, target_dir, policy, state=state,
                                             registry_options=opts, overwrite=overwrite,
                                             progress=make_progress(json_mode))
        else:
            result = do_pull(store, r, target_dir, overwrite=overwrite,
                             progress=make_progress(json_mode))
        if json_mode:
            emit_json({**result.to_dict(),
                       "verification": verified.to_dict() if verified else None})
        else:
            for note in result.notes:  # what an interrupted earlier pull left, now cleaned
                console(stderr=True).print(f"note: {note}", soft_wrap=True, markup=False)
            if verified is not None:
                console().print(escape(f"verified against {policy_file}: "
                                       f"{', '.join(s.name for s in verified.steps)}"),
                                soft_wrap=True)
            console().print(escape(f"pulled {result.files} files "
                                   f"({human_size(result.bytes_total)}) into {result.target}\n"
                                   f"{r.base}@{result.digest}"), soft_wrap=True)


@main.command()
@click.argument("ref")
@click.option("--bom", "show_bom", is_flag=True,
              help="Summarise the ML-BOM attached to REF (datasets, metrics, libraries and "
                   "licenses, considerations, safety).")
@click.option("--json", "json_mode", is_flag=True, help="Machine-readable output.")
@registry_options
def inspect(ref: str, json_mode: bool, show_bom: bool, **kw: Any) -> None:
    """Show what the model at REF holds: files, sizes, digests, media types, annotations."""
    with errors_to_exit(json_mode):
        from modelseal.transfer import fetch_model_manifest

        r, store = open_ref(ref, store_kwargs(kw))
        m = fetch_model_manifest(store, r)
        if show_bom:
            _inspect_bom(store, r, m.digest, json_mode)
            return
        from modelseal._util.json import loads_object

        config = loads_object(store.get_blob_bytes(m.config.digest, max_size=16 << 20),
                              what=f"config {m.config.digest}")
        if json_mode:
            emit_json({"ref": str(r), "digest": m.digest, "artifactType": m.artifact_type,
                       "annotations": m.annotations, "config": config,
                       "manifest": loads_object(m.raw, what=f"manifest {m.digest}")})
            return
        from rich.table import Table

        # Everything below comes from the registry: printed as text, never read as markup
        # (a file named "a[/b]" would crash rich; "[white on white]" would hide text).
        c = console()
        c.print(f"[bold]{escape(f'{r.base}@{m.digest}')}[/]", soft_wrap=True)
        c.print(escape(f"artifactType: {m.artifact_type}"))
        for k, v in sorted(m.annotations.items()):
            c.print(escape(f"  {k}: {v}"))
        desc, cfg = config.get("descriptor"), config.get("config")
        for part in (desc, cfg):
            for k, v in (part.items() if isinstance(part, dict) else ()):
                c.print(escape(f"  {k}: {v}"))
        t = Table(show_lines=False, box=None)
        for col in ("file", "size", "role", "digest"):
            t.add_column(col, overflow="fold", no_wrap=col in ("digest", "role", "size"))
        from modelseal.formats import ROLE_BY_MEDIA_TYPE

        for la in m.layers:
            t.add_row(escape(la.filepath), human_size(la.size),
                      escape(ROLE_BY_MEDIA_TYPE.get(la.media_type, la.media_type)),
                      escape(la.digest))
        c.print(t)
        c.print(f"{len(m.layers)} files, {human_size(sum(la.size for la in m.layers))}")



def _inspect_bom(store: Any, r: Any, digest: str, json_mode: bool) -> None:
    from modelseal.bom.build import summarize_bom
    from modelseal.bom.remote import find_attached_bom
    from modelseal.errors import NotFoundError

    found = find_attached_bom(store, digest)
    if found is None:
        raise NotFoundError(f"no ML-BOM is attached to {r.base}@{digest}",
                            hint="modelseal bom REF --attach --signer KEY")
    summary = summarize_bom(found.document)
    if json_mode:
        emit_json({"ref": str(r), "digest": digest, "source": found.source,
                   "referrer": found.referrer, "bom": summary})
        return
    from modelseal.cli.commands.bom_cmds import print_bom_summary

    print_bom_summary(summary, source=found.source, referrer=found.referrer)

