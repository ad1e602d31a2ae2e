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

from modelseal.cli.options import (
    load_signer,
    open_ref,
    registry_options,
    signer_options_optional,
    store_kwargs,
)
from modelseal.cli.render import console, emit_json, errors_to_exit, escape, note


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
    from modelseal.attest.output import write_file

    write_file(data, output)  # atomic, like every file modelseal writes


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
        from modelseal.bom.build import serialize_bom
        from modelseal.bom.flow import BomInputs, bom_of_directory, publish_bom
        from modelseal.errors import InputError, UsageError

        if fmt == "xml":
            serialize_bom({}, "xml")  # refuses with the reason, before any work
        is_ref = _is_ref(model)
        if not is_ref and not Path(model).is_dir():
            raise InputError(f"{model} is neither a model directory nor a reference",
                             hint="give a directory, HOST[:PORT]/REPO[:TAG] or oci:PATH[:TAG]")
        if attach and not is_ref:
            raise UsageError("--attach needs a REF (a pushed model), not a directory")
        if scan_dir is not None and no_scan:
            raise UsageError("--scan DIR and --no-scan contradict each other")
        inputs = BomInputs(name=name, version=model_version, model_card=model_card,
                           datasets=[_parse_dataset(d) for d in datasets], metrics=metrics,
                           environment=environment, environment_files=env_files,
                           steps=[_parse_step(s) for s in steps], scan=not no_scan,
                           scan_dir=scan_dir, spec_version=spec)
        signer = load_signer(kw)
        if not is_ref:
            done = bom_of_directory(model, inputs, signer=signer,
                                    attestations_dir=kw.get("attestations_dir"))
            if done.signed is not None:
                note(f"signed: {done.signed}")
            _emit_bom(serialize_bom(done.document, fmt), output, done.document, spec)
            return

        r, store = open_ref(model, store_kwargs(kw))
        done = publish_bom(store, r, inputs, signer=signer, attach=attach,
                           attestations_dir=kw.get("attestations_dir"))
        data = serialize_bom(done.document, fmt)
        if output is not None:
            _write_output(data, output)
        summary = done.summary()
        if json_mode:
            emit_json(summary)
            return
        if output is None and not attach:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        ref_text = f"{done.ref.base}@{done.digest}" if done.ref else model
        note(f"ML-BOM of {ref_text}: CycloneDX {spec}, "
             f"{summary['components']} components, validated; steps: "
             f"{', '.join(summary['steps']) or 'none found'}; safety: "
             f"{done.safety_source or 'none'}; metrics: {done.metrics_source or 'none'}")
        if output is not None:
            note(f"wrote {output}")
        if done.signed:
            note(f"signed: {done.signed}")
        if attach:
            note(f"attached: CycloneDX referrer {done.attached['bom']}"
                 + (f", signed attestation {done.attached['attestation']}"
                    if done.bundle else " (no --signer: no signed attestation)"))


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
        from modelseal.safety import safety_predicate, scan_model, sign_scan, unsafe_findings

        signer = load_signer(kw)  # a bad key fails first
        report = scan_model(model_dir)
        pred = safety_predicate(report)
        signed = None
        if signer is not None:
            signed = sign_scan(report, signer, attestations_dir=kw.get("attestations_dir"))
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
