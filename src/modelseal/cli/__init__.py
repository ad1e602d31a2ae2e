"""The ``modelseal`` command line: the entry point (``main``), and nothing else.

Every command lives in a module under ``modelseal.cli.commands`` and is loaded lazily
(``LAZY_COMMANDS``), so ``modelseal --help`` imports only click and the package root. A command
parses its options (``cli.options``), makes one library call, and renders the outcome
(``cli.render``): people get rich tables on stdout and progress bars on a terminal's stderr;
machines get ``--json`` and exit codes (docs/exit-codes.md). Command modules import
``cli.options``, ``cli.render`` and the library, never this module nor each other.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

import click

# name -> ("module:attribute" of a click command, one-line help), imported only when used.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "push": ("modelseal.cli.commands.transfer_cmds:push",
             "Package MODEL_DIR as a ModelPack artifact and push it to REF."),
    "pull": ("modelseal.cli.commands.transfer_cmds:pull",
             "Pull the model at REF into TARGET_DIR, checking every blob's digest."),
    "inspect": ("modelseal.cli.commands.transfer_cmds:inspect",
                "Show what the model at REF holds: files, sizes, digests, media types,..."),
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
