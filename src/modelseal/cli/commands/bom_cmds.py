"""``modelseal bom`` and ``modelseal scan``: what a model is made of, and whether it is safe
to load.

Thin: each command parses, calls modelseal.bom / modelseal.safety, prints. Heavy
libraries load inside the command bodies so that ``modelseal --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from modelseal.cli import (
    console,
    emit_json,
    errors_to_exit,
    escape,
    open_ref,
    registry_options,
    store_kwargs,
)
from modelseal.cli.commands.attest_cmds import _load_signer, signer_options_optional


def _parse_dataset(arg: str) -> tuple[Path, str | None]:
    """``PATH`` or ``PATH=name`` (a path that exists as written wins over the split)."""
    if Path(arg).exists() or "=" not in arg:
        return Path(arg), None
    path, _, name = arg.rpartition("=")
    return Path(path), (name or None)


def _parse_step(arg: str) -> Any:
    """``NAME``, ``NAME=sha256:<hex>`` or ``NAME=sha256:<hex>@REF``."""
    from modelseal.bom.inputs import StepRef
    from modelseal.errors import UsageError

    name, _, rest = arg.partition("=")
    if not name:
        raise UsageError(f"--step {arg!r}: give NAME[=sha256:HEX[@REF]]")
    digest, _, ref = rest.partition("@")
    if digest and not digest.startswith("sha256:"):
        raise UsageError(f"--step {arg!r}: the digest must look like sha256:<hex>")
    return StepRef(name=name, digest=digest or None, ref=ref or None)


def _is_ref(text: str) -> bool:
    """MODEL is a reference when it is not an existing directory and reads as one."""
    if Path(text).is_dir():
        return False
    from modelseal.errors import UsageError
    from modelseal.refs import parse_ref

    try:
        parse_ref(text)
    except UsageError:
        return False
    return True


def _write_output(data: bytes, output: Path) -> None:
    from modelseal._util.fs import atomic_write

    atomic_write(output, data)


@click.command()
@click.argument("model", metavar="MODEL_DIR|REF")
@click.option("--name", help="Model name (default: the model card's, the manifest's, or the "
                             "directory's).")
@click.option("--version", "model_version", help="Model version.")
@click.option("--model-card", type=click.Path(path_type=Path), metavar="FILE",
              help="Model card: YAML/JSON, or a Hugging Face README.md (front matter + "
                   "Limitations/Bias/Uses sections).")
@click.option("--dataset", "datasets", multiple=True, metavar="PATH[=NAME]",
              help="A dataset file or directory, hashed into a `data` component (repeatable).")
@click.option("--metrics", type=click.Path(path_type=Path), metavar="FILE",
              help='Metrics JSON/YAML: {"accuracy": 0.93, "slices": {...}} or a list.')
@click.option("--environment", type=click.Path(path_type=Path), metavar="PATH",
              help="Training Python environment (prefix, venv or site-packages): every "
                   "installed distribution is listed.")
@click.option("--env-files/--no-env-files", default=False, show_default=True,
              help="Also list every RECORD file hash of each distribution (large).")
@click.option("--step", "steps", multiple=True, metavar="NAME[=sha256:HEX[@REF]]",
              help="A pipeline step and its attestation, for `formulation` (repeatable; for a "
                   "REF, the steps come from the attestations attached to it).")
@click.option("--scan", "scan_dir", type=click.Path(file_okay=False, path_type=Path),
              metavar="DIR", help="For a REF: scan this local copy of the model (its files "
              "must match the manifest) instead of reading the attached safety attestation.")
@click.option("--no-scan", is_flag=True, help="Record no safety result.")
@click.option("--spec", type=click.Choice(["1.6", "1.7"]), default="1.6", show_default=True,
              help="CycloneDX specification version.")
@click.option("--format", "fmt", type=click.Choice(["json", "xml"]), default="json",
              show_default=True, help="Output format (xml is refused: it would drop the ML "
                                      "fields).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the BOM here (default: stdout, unless --attach).")
@signer_options_optional
@click.option("--attestations-dir", type=click.Path(file_okay=False), default=None,
              help="Where the signed BOM is written (default: .modelseal/attestations).")
@click.option("--attach", is_flag=True,
              help="REF only: attach the BOM to the model, signed (with --signer) and as a "
                   "plain CycloneDX referrer.")
@click.option("--json", "json_mode", is_flag=True,
              help="REF only: print a JSON summary of what was built, signed and attached "
                   "instead of the BOM (use -o to keep the BOM).")
@registry_options
def bom(model: str, name: str | None, model_version: str | None, model_card: Path | None,
        datasets: tuple[str, ...], metrics: Path | None, environment: Path | None,
        env_files: bool, steps: tuple[str, ...], scan_dir: Path | None, no_scan: bool,
        spec: str, fmt: str, output: Path | None, attach: bool, json_mode: bool,
        **kw: Any) -> None:
    """Build a validated CycloneDX ML-BOM for the model in MODEL_DIR, or for the pushed model
    at REF (its files from the manifest: no weights are downloaded).

    Every input is read and checked, and the BOM validated, before anything is signed, written
    or attached.
    """
    with errors_to_exit(json_mode):
        from modelseal.bom.build import build_bom, serialize_bom
        from modelseal.bom.environment import site_packages_of
        from modelseal.bom.inputs import dataset_from_path, load_metrics, load_model_card
        from modelseal.errors import InputError, UsageError

        if fmt == "xml":
            serialize_bom({}, "xml")  # refuses with the reason, before any work
        is_ref = _is_ref(model)
        if not is_ref and not Path(model).is_dir():
            raise InputError(f"{model} is neither a model directory nor a reference",
                             hint="give a directory, HOST[:PORT]/REPO[:TAG] or oci:PATH[:TAG]")
        if attach and not is_ref:
            raise UsageError("--attach needs a REF (a pushed model), not a directory")
        if scan_dir is not None and not is_ref:
            raise UsageError("--scan DIR is for a REF: a model directory is scanned itself")
        if scan_dir is not None and no_scan:
            raise UsageError("--scan DIR and --no-scan contradict each other")
        if is_ref and steps:
            raise UsageError("--step is for a directory; a REF's steps come from the "
                             "attestations attached to it")
        # every input first: nothing is signed, written or attached unless all of it is good
        card = load_model_card(model_card) if model_card else None
        ds = [dataset_from_path(p, n) for p, n in map(_parse_dataset, datasets)]
        mets = load_metrics(metrics) if metrics else None
        if environment is not None:
            site_packages_of(environment)
        if scan_dir is not None and not scan_dir.is_dir():
            raise InputError(f"--scan {scan_dir}: not a directory")
        signer = _load_signer(kw) if kw.get("signer") else None
        if not kw.get("signer"):
            for k in ("signer", "public_key", "trust_config"):
                kw.pop(k, None)
        model_name = name or (card or {}).get("name")

        if not is_ref:
            from modelseal.bom.inputs import model_info_from_dir

            model_dir = Path(model)
            step_refs = [_parse_step(s) for s in steps]
            info = model_info_from_dir(model_dir, model_name or model_dir.resolve().name,
                                       model_version)
            report = None
            if not no_scan:
                from modelseal.safety import scan_model

                report = scan_model(model_dir)
            doc = build_bom(info, model_card=card, datasets=ds, metrics=mets,
                            environment=environment, steps=step_refs, safety=report,
                            spec_version=spec, environment_files=env_files)
            data = serialize_bom(doc, fmt)
            if signer is not None:
                from modelseal.attest.bundle import sign_statement
                from modelseal.bom.remote import bom_statement

                st = bom_statement(doc, [(f.path, f.sha256) for f in info.files])
                path = _write_bundle(sign_statement(st, signer), signer, kw)
                click.echo(f"signed: {path}", err=True)
            _emit_bom(data, output, doc, spec)
            return

        from modelseal.bom.remote import attach_bom, bom_for_ref, bom_statement, bom_subjects

        r, store = open_ref(model, store_kwargs(kw))
        built = bom_for_ref(store, r, model_card=card, datasets=ds, metrics=mets,
                            environment=environment, scan_dir=scan_dir,
                            use_attached_safety=not no_scan, name=model_name,
                            version=model_version, spec_version=spec,
                            environment_files=env_files)
        doc = built.document
        data = serialize_bom(doc, fmt)
        bundle_path = None
        bundle = None
        if signer is not None:
            from modelseal.attest.bundle import sign_statement

            st = bom_statement(doc, bom_subjects(built.manifest, built.ref))
            bundle = sign_statement(st, signer)
            bundle_path = _write_bundle(bundle, signer, kw)
        if output is not None:
            _write_output(data, output)
        summary: dict[str, Any] = {
            "ref": str(built.ref), "digest": built.manifest.digest, "specVersion": spec,
            "components": len(doc.get("components", [])),
            "steps": [s.name for s in built.steps], "safety": built.safety_source,
            "metrics": built.metrics_source,
            "signed": str(bundle_path) if bundle_path else None, "attached": {}}
        if attach:
            from modelseal.attestations import subject_of

            subject = subject_of(store, built.manifest.digest)
            done = attach_bom(store, subject, doc, bundle)
            summary["attached"] = {"bom": done.plain.descriptor.digest,
                                   "attestation": done.signed.descriptor.digest
                                   if done.signed else None}
        if json_mode:
            emit_json(summary)
            return
        if output is None and not attach:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        note = (f"ML-BOM of {built.ref.base}@{built.manifest.digest}: CycloneDX {spec}, "
                f"{summary['components']} components, validated; steps: "
                f"{', '.join(summary['steps']) or 'none found'}; safety: "
                f"{built.safety_source or 'none'}; metrics: {built.metrics_source or 'none'}")
        click.echo(note, err=True)
        if output is not None:
            click.echo(f"wrote {output}", err=True)
        if bundle_path:
            click.echo(f"signed: {bundle_path}", err=True)
        if attach:
            click.echo(f"attached: CycloneDX referrer {summary['attached']['bom']}"
                       + (f", signed attestation {summary['attached']['attestation']}"
                          if bundle else " (no --signer: no signed attestation)"), err=True)


def _write_bundle(bundle: bytes, signer: Any, kw: dict[str, Any], step: str = "bom") -> Path:
    """Write a signed bundle atomically to the attestations directory."""
    from modelseal.attest.signers import is_keyless
    from modelseal.attest.steps import (
        DEFAULT_ATTESTATIONS_DIR,
        attestation_filename,
        write_attestation,
    )

    base = Path(kw.get("attestations_dir") or DEFAULT_ATTESTATIONS_DIR)
    kid = None if is_keyless(signer) else str(signer.public_key.keyid)
    return write_attestation(bundle, base / attestation_filename(step, kid))


def _emit_bom(data: bytes, output: Path | None, doc: dict[str, Any], spec: str) -> None:
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        _write_output(data, output)
        click.echo(f"wrote {output} (CycloneDX {spec}, {len(doc.get('components', []))} "
                   "components, validated)", err=True)


_VERDICT_STYLE = {"unsafe": "bold red", "suspicious": "yellow", "unknown": "dim",
                  "safe": "green", "no-code-format": "green"}


@click.command()
@click.argument("model_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "json_mode", is_flag=True,
              help="Print the model-safety predicate as JSON.")
@click.option("--strict", is_flag=True, help="Fail on suspicious files too, not only unsafe.")
@click.option("--refuse-unknown", is_flag=True,
              help="Fail on every unknown file too (formats modelseal does not analyse).")
@signer_options_optional
@click.option("--attestations-dir", type=click.Path(file_okay=False), default=None,
              help="Where the signed result is written (default: .modelseal/attestations).")
def scan(model_dir: Path, json_mode: bool, strict: bool, refuse_unknown: bool,
         **kw: Any) -> None:
    """Scan MODEL_DIR for files that would run code when loaded (pickles, PyTorch checkpoints,
    joblib, numpy object arrays). Exits 10 when an unsafe file is found.

    With --signer, the result is also signed as an in-toto Statement (predicate
    https://modelseal.dev/attestation/model-safety/v1, subjects = the model's files named as
    `modelseal push` names them) and written atomically to the attestations directory, where
    `push --attestations` picks it up. A FAILED result is written too: it is evidence.
    """
    with errors_to_exit(json_mode):
        from modelseal.errors import VerificationError
        from modelseal.formats import SAFETY_PREDICATE
        from modelseal.safety import safety_predicate, safety_subjects, scan_model, unsafe_findings

        signer = _load_signer(kw) if kw.get("signer") else None  # a bad key fails first
        report = scan_model(model_dir)
        pred = safety_predicate(report)
        signed = None
        if signer is not None:
            from modelseal.attest.bundle import sign_statement
            from modelseal.attest.statement import statement

            subjects = [(s["name"], s["digest"]["sha256"]) for s in safety_subjects(report)]
            signed = _write_bundle(sign_statement(statement(subjects, SAFETY_PREDICATE, pred),
                                                  signer), signer, kw, "scan")
        if json_mode:
            emit_json(pred)
        else:
            from rich.table import Table

            t = Table(title=escape(f"{model_dir} — scanned with {report.scanner} "
                                   f"{report.scanner_version}"))
            for col in ("file", "format", "verdict", "imports"):
                t.add_column(col)
            for f in report.files:
                imports = ", ".join(
                    f"{x.callable}" + (f" (in {x.member})" if x.member else "")
                    for x in f.findings if x.severity != "innocuous")
                t.add_row(escape(f.path), escape(f.format),
                          f"[{_VERDICT_STYLE.get(f.verdict, 'default')}]{f.verdict}[/]",
                          escape(imports or (f.note or "")))
            console().print(t)
        if signed is not None:
            click.echo(f"modelseal: signed model-safety result ({pred['result']}): {signed}",
                       err=True)
        problems = unsafe_findings(pred, include_suspicious=strict,
                                   include_unknown=refuse_unknown)
        if problems:
            raise VerificationError(
                f"{len(problems)} file(s) or import(s) refused: " + "; ".join(problems[:5]),
                reasons=problems,
                hint="do not load these files; prefer safetensors for weights")
        if not json_mode:
            c = report.counts()
            console(stderr=True).print(
                f"no unsafe files ({c['safe']} safe pickles, {c['no-code-format']} no-code "
                f"formats, {c['suspicious']} suspicious, {c['unknown']} unknown)")


def print_bom_summary(summary: dict[str, Any], *, source: str, referrer: str) -> None:
    """Print :func:`modelseal.bom.summarize_bom` for a person (used by ``inspect --bom``)."""
    from rich.table import Table

    c = console()
    m = summary["model"]
    c.print(f"[bold]ML-BOM[/] (CycloneDX {summary.get('spec_version')}, from the {source} "
            f"{referrer}; signature not checked here: `modelseal verify` checks it)",
            soft_wrap=True)
    c.print(f"model: {escape(str(m.get('name')))} {escape(str(m.get('version') or ''))}  "
            f"{m.get('files')} files  license: {escape(str(m.get('license') or 'unknown'))}",
            soft_wrap=True)
    if m.get("purl"):
        c.print(f"purl: {escape(str(m['purl']))}", soft_wrap=True)
    for k in ("task", "architecture"):
        if summary.get(k):
            c.print(f"{k}: {escape(str(summary[k]))}")
    if summary["datasets"]:
        t = Table(title="datasets", box=None, title_justify="left")
        for col in ("name", "sha256", "license", "source"):
            t.add_column(col, overflow="fold")
        for d in summary["datasets"]:
            t.add_row(*(escape(str(d.get(k) or "-")) for k in ("name", "sha256", "license",
                                                                "source")))
        c.print(t)
    else:
        c.print("datasets: none recorded")
    if summary["metrics"]:
        t = Table(title="metrics", box=None, title_justify="left")
        for col in ("metric", "value", "slice", "confidence interval"):
            t.add_column(col)
        for x in summary["metrics"]:
            ci = x.get("confidenceInterval") or {}
            t.add_row(escape(str(x.get("type"))), escape(str(x.get("value"))),
                      escape(str(x.get("slice") or "-")),
                      f"{ci.get('lowerBound')}..{ci.get('upperBound')}" if ci else "-")
        c.print(t)
    else:
        c.print("metrics: none recorded")
    libs = summary["libraries"]
    lic = ", ".join(f"{escape(k)} ({v})" for k, v in list(libs["licenses"].items())[:12])
    c.print(f"libraries: {libs['count']}" + (f"; licenses: {lic}" if lic else ""),
            soft_wrap=True)
    cons = summary.get("considerations") or {}
    for k, v in cons.items():
        items = [x.get("name", str(x)) if isinstance(x, dict) else str(x) for x in v]
        c.print(f"{k}: " + "; ".join(escape(i) for i in items), soft_wrap=True)
    sf = summary["safety"]
    if sf.get("result"):
        c.print(f"safety: {sf['result']} ({escape(str(sf.get('scanner')))})"
                + (f"; unsafe: {', '.join(map(str, sf['unsafe_files']))}"
                   if sf.get("unsafe_files") else ""), soft_wrap=True)
    else:
        c.print("safety: not recorded")
    if summary.get("steps"):
        c.print("pipeline: " + " -> ".join(escape(str(s)) for s in summary["steps"]),
                soft_wrap=True)
