"""``copy``, ``bundle export|verify`` and ``audit``: moving a model with its evidence, and
reading that evidence offline."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import click

from modelseal.cli.options import registry_options, store_kwargs
from modelseal.cli.render import console, emit_json, errors_to_exit, human_size, make_progress


@contextlib.contextmanager
def _committed(store: Any) -> Iterator[Any]:
    """Commit an oci-archive destination once the block succeeded; always clean up."""
    from modelseal.oci.archive import ArchiveStore

    try:
        yield store
        if isinstance(store, ArchiveStore):
            store.commit()
    finally:
        close = getattr(store, "close", None)
        if callable(close):
            close()


@click.command()
@click.argument("src")
@click.argument("dst")
@click.option("--filter-type", "filter_types", multiple=True, metavar="TYPE",
              help="Copy only referrers with this predicate type or artifact type "
                   "(repeatable); referrers of those referrers are always copied.")
@click.option("--allow-retag", is_flag=True, help="Allow moving an existing tag in DST.")
@click.option("--policy", "policy_file", type=click.Path(exists=True, dir_okay=False),
              help="Verify the copy in DST against this policy afterwards (exit 10 if not).")
@click.option("--jobs", default=8, show_default=True, type=click.IntRange(1, 64),
              help="Blobs copied at once.")
@click.option("--json", "json_mode", is_flag=True, help="Machine-readable output.")
@registry_options
def copy(src: str, dst: str, filter_types: tuple[str, ...], allow_retag: bool,
         policy_file: str | None, jobs: int, json_mode: bool, **kw: Any) -> None:
    """Copy the model at SRC with every referrer to DST, digest-identical.

    SRC and DST are any references: HOST/REPO[:TAG], oci:DIR[:TAG], oci-archive:FILE.tar[:TAG].
    A rerun after an interruption copies only what is missing. DST's tag defaults to SRC's.
    """
    with errors_to_exit(json_mode):
        from modelseal.copy import copy as do_copy
        from modelseal.oci import open_store
        from modelseal.refs import parse_ref

        opts = store_kwargs(kw)
        src_ref = parse_ref(src, default_tag=None)
        dst_ref = parse_ref(dst, default_tag=None)
        src_store = open_store(src_ref, **opts)
        if src_ref.kind == "oci-archive" and not (src_ref.tag or src_ref.digest):
            # an archive holding one model (an audit bundle, a backup): that model's tag, as
            # `copy oci-archive:backup.tar REGISTRY/REPO:TAG` in docs/auditor.md restores it
            from modelseal.audit.bundle import bundle_info
            from modelseal.oci.archive import ArchiveStore

            if isinstance(src_store, ArchiveStore):
                src_ref = src_ref.with_tag(str(bundle_info(src_store).get("tag") or "latest"))
        elif not (src_ref.tag or src_ref.digest):
            src_ref = parse_ref(src)
        verified = None
        if dst_ref.kind == "oci-archive":
            from modelseal.oci.archive import ArchiveStore

            dst_open: Any = ArchiveStore(dst_ref.location, writable=True)
        else:
            dst_open = open_store(dst_ref, **opts)
        with _committed(dst_open) as dst_store:
            result = do_copy(src_store, src_ref, dst_store, dst_ref, filter_types=filter_types,
                             workers=jobs, progress=make_progress(json_mode),
                             allow_retag=allow_retag)
        if policy_file:
            from modelseal.verify.pipeline import verify_model
            from modelseal.verify.policy import load_policy

            check_ref = dst_ref.with_tag(result.tag).with_digest(result.digest)
            verified = verify_model(open_store(dst_ref, **opts), check_ref,
                                    load_policy(policy_file), registry_options=opts)
        if json_mode:
            emit_json({**result.to_dict(),
                       "verification": verified.to_dict() if verified else None})
        else:
            c = console()
            c.print(f"copied {result.source} -> {result.destination}", soft_wrap=True)
            c.print(f"{result.blobs} blobs ({human_size(result.bytes_total)}): "
                    f"{result.blobs_copied} copied ({human_size(result.bytes_copied)}), "
                    f"{result.blobs_present} already there, {result.blobs_mounted} mounted; "
                    f"{len(result.referrers)} referrers"
                    + (f" ({result.referrers_filtered} filtered out)"
                       if result.referrers_filtered else ""))
            if verified is not None:
                c.print(f"verified in {dst_ref.base}: {verified.verified}", soft_wrap=True)
        if verified is not None:
            verified.raise_for_refusal()


def _print_verdict(result: Any) -> None:
    from rich.markup import escape

    c = console()
    c.print(f"[bold]{escape(result.ref or result.subject)}[/]", soft_wrap=True)
    for s in result.steps:
        mark = "[green]passed[/]" if s.passed else "[red]failed[/]"
        c.print(f"  {escape(s.name)}: {mark} ({escape(', '.join(s.signers) or '-')})",
                soft_wrap=True)
    for r in result.requirements:
        c.print(f"  {'[green]ok[/]' if r.passed else '[red]failed[/]'}  {escape(r.name)}",
                soft_wrap=True)
    if result.verified:
        c.print("[bold green]VERIFIED[/]")
    else:
        c.print("[bold red]REFUSED[/]")
        for r in result.refusals:
            c.print(f"  - {escape(r.message)}", soft_wrap=True)


@click.group()
def bundle() -> None:
    """Offline audit bundles: one tar file with the model's manifest, every attestation and,
    with --policy, the layout, keys and trusted root to verify it with no network."""


@bundle.command("export")
@click.argument("ref")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The bundle file to write (an OCI image-layout tar).")
@click.option("--policy", "policy_file", type=click.Path(exists=True, dir_okay=False),
              help="Carry this policy, its layout, keys and trusted root in the bundle.")
@click.option("--with-weights", is_flag=True,
              help="Include the weight blobs (by default only their digests are kept).")
@click.option("--json", "json_mode", is_flag=True, help="Machine-readable output.")
@registry_options
def bundle_export(ref: str, output: str, policy_file: str | None, with_weights: bool,
                  json_mode: bool, **kw: Any) -> None:
    """Export the model at REF with its evidence into one offline-verifiable file."""
    with errors_to_exit(json_mode):
        from modelseal.audit.bundle import export_bundle
        from modelseal.oci import open_store
        from modelseal.refs import parse_ref

        opts = store_kwargs(kw)
        r = parse_ref(ref)
        res = export_bundle(open_store(r, **opts), r, output, policy=policy_file,
                            with_weights=with_weights, progress=make_progress(json_mode),
                            registry_options=opts)
        if json_mode:
            emit_json(res.to_dict())
            return
        c = console()
        c.print(f"wrote {res.path}: {res.ref}", soft_wrap=True)
        c.print(f"{res.referrers} referrers, {res.blobs} blobs ({human_size(res.bytes_total)})"
                + (f", {len(res.omitted_blobs)} weight blobs left out (digests kept)"
                   if res.omitted_blobs else "")
                + (f"; policy, layout, {len([f for f in res.files if '/keys/' in f])} keys "
                   "and trusted root included" if res.files else ""))


@bundle.command("verify")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--policy", "policy_file", type=click.Path(exists=True, dir_okay=False),
              help="Verify against this policy instead of the one in the bundle.")
@click.option("--json", "json_mode", is_flag=True, help="Machine-readable output.")
def bundle_verify(file: str, policy_file: str | None, json_mode: bool) -> None:
    """Verify the model in a bundle FILE with no network at all (exit 10 when refused)."""
    with errors_to_exit(json_mode):
        from modelseal.audit.bundle import verify_bundle_file

        result = verify_bundle_file(file, policy=policy_file)
        if json_mode:
            emit_json(result.to_dict())
        else:
            _print_verdict(result)
        result.raise_for_refusal()


@click.command()
@click.argument("ref")
@click.option("--policy", "policy_file", type=click.Path(exists=True, dir_okay=False),
              help="Verify against this policy and show the verdict with every reason.")
@click.option("--html", "html_file", type=click.Path(dir_okay=False),
              help="Write a self-contained HTML report (no external assets) to this file.")
@click.option("--json", "json_mode", is_flag=True, help="The whole report as JSON on stdout.")
@registry_options
def audit(ref: str, policy_file: str | None, html_file: str | None, json_mode: bool,
          **kw: Any) -> None:
    """Everything about the model at REF for an auditor: provenance graph, steps with their
    signers and evidence, the verdict, the ML-BOM, the safety result and findings.

    The exit code is 0 whether or not the model verified: the report is the product (read
    the verdict in it); `modelseal verify` is the gate.
    """
    with errors_to_exit(json_mode):
        from modelseal.audit.html import render_html
        from modelseal.audit.report import build_report
        from modelseal.oci import open_store
        from modelseal.refs import parse_ref

        opts = store_kwargs(kw)
        policy = None
        if policy_file:
            from modelseal.verify.policy import load_policy

            policy = load_policy(policy_file)
        r = parse_ref(ref)
        report = build_report(open_store(r, **opts), r, policy=policy, registry_options=opts)
        if html_file:
            from modelseal.attest.output import write_file

            write_file(render_html(report).encode(), html_file)  # atomic write
        if json_mode:
            emit_json(report.to_dict())
            return
        c = console()
        c.print(f"[bold]{report.name}[/] {report.ref}", soft_wrap=True)
        c.print(f"verdict: {report.verdict}; {len(report.steps)} steps, "
                f"{len(report.evidence)} attestations, {len(report.findings)} findings",
                soft_wrap=True)
        if html_file:
            c.print(f"report written to {html_file}", soft_wrap=True)
