"""``layout`` (new, sign, check, push) and ``verify``: the deployer's gate."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from modelseal.cli.options import open_ref, registry_options, store_kwargs, tsa_option
from modelseal.cli.render import console, emit_json, errors_to_exit, escape

EXIT_REFUSED = 10
EXIT_CHECK_FAILED = 1


def _write_json(doc: Any, output: str | None) -> None:
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    if output in (None, "-"):
        click.echo(text, nl=False)
    else:
        from modelseal.attest.output import write_file

        write_file(text.encode(), output)  # atomic; an unwritable place is an InputError


@click.group()
def layout() -> None:
    """Create, sign, check and publish in-toto layouts (who may sign which step)."""


@layout.command("new")
@click.option("--template", "-t", required=True,
              help="ml-pipeline, ml-pipeline-keyless, ml-pipeline-hsm, or a layout file.")
@click.option("--functionary", "-f", "functionaries", multiple=True, metavar="STEP=KEY",
              help="Authorize KEY for STEP (repeatable): a PEM public key, "
                   "sigstore:IDENTITY[?issuer=URL], or a signer URI such as hsm:2?label=L.")
@click.option("--threshold", "thresholds", multiple=True, metavar="STEP=N",
              help="Signatures by distinct functionaries STEP needs (repeatable).")
@click.option("--expires", default="180d", show_default=True,
              help="Validity from now, e.g. 90d, 26w.")
@click.option("--output", "-o", help="Write here (default: standard output).")
def layout_new(template: str, functionaries: tuple[str, ...], thresholds: tuple[str, ...],
               expires: str, output: str | None) -> None:
    """Create an (unsigned) layout from a template, with its functionaries' keys."""
    with errors_to_exit():
        from datetime import UTC, datetime

        from modelseal._util.time import parse_duration
        from modelseal.errors import UsageError
        from modelseal.intoto_layout.authoring import (
            load_template,
            new_layout,
            parse_functionaries,
        )
        from modelseal.intoto_layout.model import EXTENSION, GITHUB_ISSUER, load_functionary_key

        tpl = load_template(template)
        ext = tpl.get(EXTENSION) if isinstance(tpl.get(EXTENSION), dict) else {}
        issuer = str((ext or {}).get("default_issuer") or GITHUB_ISSUER)
        pairs: list[tuple[str, Any]] = []
        names: dict[str, str] = {}
        for step, spec in parse_functionaries(functionaries):
            key = load_functionary_key(spec, default_issuer=issuer)
            pairs.append((step, key))
            if Path(spec).is_file():  # the key file's name names the functionary
                names.setdefault(key.keyid, Path(spec).name.split(".")[0])
        th: dict[str, int] = {}
        for t in thresholds:
            step, sep, n = t.partition("=")
            if not sep or not n.isdigit():
                raise UsageError(f"threshold {t!r}: write STEP=N")
            th[step] = int(n)
        doc = new_layout(tpl, pairs, thresholds=th, names=names,
                         expires=datetime.now(UTC) + parse_duration(expires))
        _write_json(doc, output)
        if output not in (None, "-"):
            console(stderr=True).print(escape(f"wrote {output}: sign it with "
                                              f"`modelseal layout sign {output} --key KEY`"))


@layout.command("sign")
@click.argument("layout_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--key", "-k", "keys", required=True, multiple=True,
              help="Layout owner's private key: PEM path or signer URI (repeatable).")
@click.option("--output", "-o", help="Write here (default: overwrite LAYOUT_FILE).")
def layout_sign(layout_file: str, keys: tuple[str, ...], output: str | None) -> None:
    """Sign a layout (DSSE, as in-toto-sign does); signing a signed layout adds a signature."""
    with errors_to_exit():
        from modelseal.attest.signers import load_signer
        from modelseal.intoto_layout.authoring import sign_layout
        from modelseal.intoto_layout.model import read_layout_file

        doc = read_layout_file(layout_file)
        for k in keys:
            doc = sign_layout(doc, load_signer(k))
        _write_json(doc, output or layout_file)
        if output != "-":
            console(stderr=True).print(escape(f"signed {output or layout_file} "
                                              f"({len(doc.get('signatures') or [])} "
                                              "signature(s))"))


@layout.command("check")
@click.argument("layout_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--separate", multiple=True, metavar="STEP,STEP",
              help="Steps that must be signed by different people (repeatable).")
@click.option("--soon", default="30d", show_default=True,
              help="Warn when the layout expires within this time.")
@click.option("--json", "json_mode", is_flag=True, help="Machine-readable output.")
def layout_check(layout_file: str, separate: tuple[str, ...], soon: str,
                 json_mode: bool) -> None:
    """Lint a layout: exits 1 when it has errors (warnings alone exit 0)."""
    with errors_to_exit(json_mode):
        from modelseal._util.time import parse_duration
        from modelseal.errors import UsageError
        from modelseal.intoto_layout.lint import check_layout
        from modelseal.intoto_layout.model import payload_of, read_layout_file

        pairs = []
        for s in separate:
            a, sep, b = s.partition(",")
            if not sep or not a or not b:
                raise UsageError(f"--separate {s!r}: write STEP,STEP")
            pairs.append((a.strip(), b.strip()))
        rep = check_layout(payload_of(read_layout_file(layout_file)),
                           soon=parse_duration(soon), separate=pairs)
        if json_mode:
            emit_json(rep.to_dict())
        else:

            c = console()
            for f in rep.findings:
                colour = "red" if f.level == "error" else "yellow"
                c.print(f"[{colour}]{f.level}[/] {escape(f'[{f.code}]')} {escape(f.message)}",
                        soft_wrap=True)
            c.print("layout OK" if rep.ok and not rep.findings else
                    ("layout OK (with warnings)" if rep.ok else
                     f"{sum(f.level == 'error' for f in rep.findings)} error(s)"))
        if not rep.ok:
            sys.exit(EXIT_CHECK_FAILED)


@layout.command("push")
@click.argument("layout_file", type=click.Path(exists=True, dir_okay=False))
@click.argument("ref")
@registry_options
def layout_push(layout_file: str, ref: str, **kw: Any) -> None:
    """Publish a signed layout as an OCI artifact; prints the reference to pin in a policy."""
    with errors_to_exit():
        from modelseal.errors import UsageError
        from modelseal.intoto_layout.lint import check_layout
        from modelseal.intoto_layout.model import payload_of, read_layout_file, unsigned_reason
        from modelseal.verify.evidence import push_layout

        data = Path(layout_file).read_bytes()
        raw = read_layout_file(layout_file)
        why = unsigned_reason(raw)
        if why:  # a deployer pins what is pushed: publish only what could ever verify
            raise UsageError(f"{layout_file}: {why}; not pushed",
                             hint="sign it first: modelseal layout sign FILE --key KEY")
        errors = [f for f in check_layout(payload_of(raw)).findings if f.level == "error"]
        if errors:
            raise UsageError(f"{layout_file} has errors and was not pushed: "
                             + "; ".join(f"[{f.code}] {f.message}" for f in errors),
                             hint="run `modelseal layout check`")
        r, store = open_ref(ref, store_kwargs(kw))
        digest = push_layout(store, data, r.tag)
        click.echo(f"{r.base}@{digest}")


def _print_result(result: Any) -> None:
    from rich.table import Table

    c = console()
    c.print(f"[bold]{escape(result.ref or result.subject)}[/]", soft_wrap=True)
    c.print(escape(f"layout {result.layout} ({result.layout_digest})"), soft_wrap=True)
    t = Table(box=None)
    for col in ("step", "result", "signed by"):
        t.add_column(col, overflow="fold")
    for s in result.steps:
        t.add_row(escape(s.name), "[green]passed[/]" if s.passed else "[red]failed[/]",
                  escape(", ".join(s.signers) or "-"))
    c.print(t)
    for r in result.requirements:
        c.print(f"{'[green]ok[/]' if r.passed else '[red]failed[/]'}  {escape(r.name)}",
                soft_wrap=True)
    for w in result.warnings:
        c.print(f"[yellow]warning:[/] {escape(w)}", soft_wrap=True)
    if result.vsa:
        c.print(escape(f"verification summary attached: {result.vsa}"), soft_wrap=True)
    if result.verified:
        c.print("[bold green]VERIFIED[/]")
    else:
        c.print("[bold red]REFUSED[/]")
        for r in result.refusals:
            c.print(f"  - {escape(r.message)}", soft_wrap=True)


@click.command()
@click.argument("ref")
@click.option("--policy", "policy_file", required=True,
              type=click.Path(exists=True, dir_okay=False), help="The deployer's policy (YAML).")
@click.option("--vsa-signer", help="Sign a SLSA verification summary with this key or URI.")
@tsa_option
@click.option("--attach", is_flag=True,
              help="Attach the verification summary to the model (needs --vsa-signer).")
@click.option("--vsa-output", type=click.Path(dir_okay=False),
              help="Write the signed verification summary bundle to this file.")
@click.option("--state", "state_dir", type=click.Path(file_okay=False), envvar="MODELSEAL_STATE",
              help="Where this verifier remembers each model's lifecycle head (rollback "
                   "defence; default: the user's state directory; env MODELSEAL_STATE).")
@click.option("--at", "at_time", metavar="TIME",
              help="Judge as of this time (ISO 8601): was the model valid then? Expiry, ages "
                   "and stages are evaluated at TIME.")
@click.option("--json", "json_mode", is_flag=True, help="Machine-readable output.")
@registry_options
def verify(ref: str, policy_file: str, vsa_signer: str | None, attach: bool,
           vsa_output: str | None, state_dir: str | None, at_time: str | None,
           json_mode: bool, **kw: Any) -> None:
    """Verify the model at REF against a policy, without downloading its weights.

    Exit codes: 0 verified, 10 refused, 2 usage error, 3 registry unreachable.
    """
    with errors_to_exit(json_mode):
        from modelseal.errors import UsageError
        from modelseal.verify.pipeline import verify_model
        from modelseal.verify.policy import load_policy

        if (attach or vsa_output) and not vsa_signer:
            raise UsageError("--attach and --vsa-output need --vsa-signer")
        opts = store_kwargs(kw)
        policy = load_policy(policy_file)
        signer = None
        if vsa_signer:
            from modelseal.attest.signers import load_signer

            signer = load_signer(vsa_signer)  # before verifying: a bad key fails first
        now = None
        if at_time:
            from modelseal._util.time import parse_time

            now = parse_time(at_time)
        state = None
        if policy.lifecycle is not None and now is None:  # a past verdict moves no state
            from modelseal.lifecycle.state import StateStore

            state = StateStore(state_dir)
        r, store = open_ref(ref, opts)
        result = verify_model(store, r, policy, registry_options=opts, now=now, state=state)
        if signer is not None:
            from modelseal.verify.vsa import publish_vsa

            publish_vsa(store, r, result, policy, signer, attach=attach, output=vsa_output)
        if json_mode:
            emit_json(result.to_dict())
        else:
            _print_result(result)
        if not result.verified:
            sys.exit(EXIT_REFUSED)
