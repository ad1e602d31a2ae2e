"""``promote``, ``deprecate``, ``retire``, ``correct``, ``history``: a model's lifecycle.

Thin: each command parses, calls ``modelseal.lifecycle.service``, prints. Every transition is
a new signed record attached to the model; nothing is changed in place (docs/lifecycle.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from modelseal.cli.options import open_ref, registry_options, store_kwargs
from modelseal.cli.render import console, emit_json, errors_to_exit

F = TypeVar("F", bound=Callable[..., Any])


def tsa_option(f: F) -> F:
    """``--tsa URL`` (env MODELSEAL_TSA): have an RFC 3161 TSA countersign the signature."""
    return click.option("--tsa", "tsa", metavar="URL", default=None,
                        help="RFC 3161 Time-Stamp Authority that countersigns the signature "
                             "(env MODELSEAL_TSA).")(f)


def tsa_client(url: str | None) -> Any:
    """A TSAClient for ``--tsa`` or $MODELSEAL_TSA, or None."""
    from modelseal.attest.tsa import TSAClient, tsa_url

    u = tsa_url(url)
    return TSAClient(u) if u else None


def _transition_options(f: F) -> F:
    f = registry_options(f)
    f = click.option("--json", "json_mode", is_flag=True, help="Machine-readable output.")(f)
    f = click.option("--policy", "policy_file", type=click.Path(exists=True, dir_okay=False),
                     envvar="MODELSEAL_POLICY",
                     help="Deployer policy: choose the chain's head among verified, approved "
                          "records (recommended; without it, from the records' links).")(f)
    f = tsa_option(f)
    f = click.option("--ticket", help="Change ticket or review reference.")(f)
    f = click.option("--signer", required=True, envvar="MODELSEAL_SIGNER", metavar="URI|PATH",
                     help="PEM private key path or signer URI (file2:, hsm:, gcpkms:, ...).")(f)
    return f


def _do_transition(ref: str, action: str, kw: dict[str, Any], stage: str | None = None,
                   corrections: dict[str, Any] | None = None) -> None:
    json_mode = kw.pop("json_mode", False)
    with errors_to_exit(json_mode):
        from modelseal.attest.signers import load_signer
        from modelseal.lifecycle.service import (
            load_policy_with_lifecycle,
            transition,
            trusted_layout,
        )

        opts = store_kwargs(kw)
        signer = load_signer(kw["signer"])  # a bad key fails before anything is read
        tsa = tsa_client(kw["tsa"])
        layout, roots = None, []
        if kw["policy_file"]:
            policy, lc = load_policy_with_lifecycle(kw["policy_file"])
            layout = trusted_layout(policy, opts)
            roots = lc.tsa_roots if lc else []
        r, store = open_ref(ref, opts)
        res = transition(store, r, action=action, signer=signer, stage=stage,
                         reason=kw.get("reason"), ticket=kw["ticket"], tsa=tsa, layout=layout,
                         tsa_roots=roots, corrections=corrections)
        if json_mode:
            emit_json({"ref": ref, **res.to_dict()})
            return
        what = f"promotion to {res.record.stage}" if action == "promote" else (
            "correction" if action == "correct" else action)
        verb = "approved" if res.approved_existing else "signed"
        console().print(f"{verb} record {res.record.sequence} ({what}) of "
                        f"{r.base}@{res.record.digest}\nrecord {res.digest}\n"
                        f"attached as {res.referrer}"
                        + ("" if res.timestamped else "\nno trusted timestamp (--tsa)"),
                        soft_wrap=True)
        if not res.verified_head:
            console(stderr=True).print("note: the chain's head was chosen without checking "
                                       "signatures; pass --policy to choose among approved "
                                       "records", soft_wrap=True)


@click.command()
@click.argument("ref")
@click.option("--stage", required=True, help="Stage to promote to, e.g. staging, production.")
@click.option("--reason", help="Why (kept in the signed record).")
@_transition_options
def promote(ref: str, stage: str, **kw: Any) -> None:
    """Promote the model at REF to STAGE (or approve a pending promotion, or re-affirm it).

    The record names the tag REF was given with: verifying by that tag later checks that it
    still points at this model."""
    _do_transition(ref, "promote", kw, stage)


@click.command()
@click.argument("ref")
@click.option("--reason", required=True, help="Why the model is deprecated.")
@_transition_options
def deprecate(ref: str, **kw: Any) -> None:
    """Deprecate the model at REF: it still verifies, with a warning (policy may refuse)."""
    _do_transition(ref, "deprecate", kw)


@click.command()
@click.argument("ref")
@click.option("--reason", required=True, help="Why the model is retired.")
@_transition_options
def retire(ref: str, **kw: Any) -> None:
    """Retire the model at REF for good: it no longer verifies under a lifecycle policy."""
    _do_transition(ref, "retire", kw)


@click.command()
@click.argument("ref")
@click.option("--set", "fields", multiple=True, required=True, metavar="FIELD=VALUE",
              help="Corrected metadata field (repeatable; JSON values allowed).")
@click.option("--reason", required=True, help="What was wrong.")
@_transition_options
def correct(ref: str, fields: tuple[str, ...], **kw: Any) -> None:
    """Correct the metadata of the model at REF with a new signed record (nothing is
    changed in place); later corrections win field by field."""
    import json

    from modelseal.errors import UsageError

    out: dict[str, Any] = {}
    with errors_to_exit(kw.get("json_mode", False)):
        for f in fields:
            k, sep, v = f.partition("=")
            if not sep or not k:
                raise UsageError(f"--set {f!r}: write FIELD=VALUE")
            try:
                out[k] = json.loads(v)
            except ValueError:
                out[k] = v
    _do_transition(ref, "correct", kw, corrections=out)


@click.command()
@click.argument("ref")
@click.option("--policy", "policy_file", type=click.Path(exists=True, dir_okay=False),
              envvar="MODELSEAL_POLICY",
              help="Verify every signature against the policy's layout and name functionaries.")
@click.option("--tsa-cert", "tsa_certs", multiple=True, type=click.Path(exists=True),
              help="TSA certificate (PEM) whose timestamps count (besides the policy's).")
@click.option("--state", "state_dir", type=click.Path(file_okay=False), default=None,
              help="Compare with the chain head this verifier remembers (env MODELSEAL_STATE).")
@click.option("--json", "json_mode", is_flag=True, help="Machine-readable output.")
@registry_options
def history(ref: str, policy_file: str | None, tsa_certs: tuple[str, ...],
            state_dir: str | None, json_mode: bool, **kw: Any) -> None:
    """The model's story in time order: steps, approvals, transitions, who, when, evidence."""
    with errors_to_exit(json_mode):
        from modelseal.attest.tsa import load_tsa_certificates
        from modelseal.lifecycle.service import history as do_history
        from modelseal.lifecycle.service import load_policy_with_lifecycle, trusted_layout

        opts = store_kwargs(kw)
        roots = load_tsa_certificates(list(tsa_certs))
        layout = None
        if policy_file:
            policy, lc = load_policy_with_lifecycle(policy_file)
            layout = trusted_layout(policy, opts)
            roots += lc.tsa_roots if lc else []
        r, store = open_ref(ref, opts)
        known = None
        if state_dir is not None or _state_env():
            from modelseal.lifecycle.state import StateStore

            known = StateStore(state_dir).load(store.resolve(r.reference) or "")
        h = do_history(store, r, layout=layout, tsa_roots=roots, known=known)
        if json_mode:
            emit_json(h.to_dict())
            return
        _print_history(h)


def _state_env() -> bool:
    import os

    return bool(os.environ.get("MODELSEAL_STATE"))


def _print_history(h: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    c = console()
    c.print(f"[bold]{escape(h.ref)}[/]  {h.digest}", soft_wrap=True)
    if h.lifecycle is not None:
        c.print(f"stage: {h.lifecycle.stage or '(never promoted)'}   status: "
                f"{h.lifecycle.status or '-'}")
    t = Table(box=None)
    for col in ("when", "time", "what", "who", "evidence"):
        t.add_column(col, overflow="fold")
    for e in h.events:
        extra = ""
        if e.kind == "lifecycle":
            bits = [f"reason: {e.detail['reason']}" if e.detail.get("reason") else "",
                    f"ticket: {e.detail['ticket']}" if e.detail.get("ticket") else "",
                    f"supersedes {str(e.detail['supersedes'])[:19]}"
                    if e.detail.get("supersedes") else ""]
            extra = "".join(f"\n  {b}" for b in bits if b)
        t.add_row(e.time or "?", e.time_source, escape(e.what + extra),
                  escape(", ".join(e.who)) + ("" if e.verified else " (unverified)"),
                  "\n".join(x[:19] for x in e.evidence))
    c.print(t)
    if h.lifecycle is not None:
        for r in h.lifecycle.refusals:
            c.print(f"[red]refused:[/] {escape(r.message)}", soft_wrap=True)
        for w in h.lifecycle.warnings:
            c.print(f"[yellow]warning:[/] {escape(w)}", soft_wrap=True)
