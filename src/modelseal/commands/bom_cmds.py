"""``modelseal bom`` and ``modelseal scan``: what a model is made of, and whether it is safe
to load.

Thin: each command parses, calls modelseal.bom / modelseal.safety, prints. Heavy libraries load
inside the command bodies so that ``modelseal --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from modelseal.cli import console, emit_json, errors_to_exit


def _parse_dataset(arg: str) -> tuple[Path, str | None]:
    """``PATH`` or ``PATH=name`` (a path that exists as written wins over the split)."""
    if Path(arg).exists() or "=" not in arg:
        return Path(arg), None
    path, _, name = arg.rpartition("=")
    return Path(path), (name or None)


def _parse_step(arg: str) -> Any:
    """``NAME``, ``NAME=sha256:<hex>`` or ``NAME=sha256:<hex>@REF``."""
    from modelseal.bom import StepRef
    from modelseal.errors import UsageError

    name, _, rest = arg.partition("=")
    if not name:
        raise UsageError(f"--step {arg!r}: give NAME[=sha256:HEX[@REF]]")
    digest, _, ref = rest.partition("@")
    if digest and not digest.startswith("sha256:"):
        raise UsageError(f"--step {arg!r}: the digest must look like sha256:<hex>")
    return StepRef(name=name, digest=digest or None, ref=ref or None)


@click.command()
@click.argument("model_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", help="Model name (default: the model card's name or the directory's).")
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
              help="A pipeline step and its attestation, for `formulation` (repeatable).")
@click.option("--scan/--no-scan", "do_scan", default=True, show_default=True,
              help="Scan the model files and record each file's safety verdict.")
@click.option("--spec", type=click.Choice(["1.6", "1.7"]), default="1.6", show_default=True,
              help="CycloneDX specification version.")
@click.option("--format", "fmt", type=click.Choice(["json", "xml"]), default="json",
              show_default=True, help="Output format (xml is refused: it would drop the ML "
                                      "fields).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the BOM here (default: stdout).")
def bom(model_dir: Path, name: str | None, model_version: str | None, model_card: Path | None,
        datasets: tuple[str, ...], metrics: Path | None, environment: Path | None,
        env_files: bool, steps: tuple[str, ...], do_scan: bool, spec: str, fmt: str,
        output: Path | None) -> None:
    """Build a validated CycloneDX ML-BOM for the model in MODEL_DIR."""
    with errors_to_exit():
        from modelseal.bom import (
            build_bom,
            dataset_from_path,
            load_metrics,
            load_model_card,
            model_info_from_dir,
            serialize_bom,
        )
        from modelseal.errors import InputError

        if fmt == "xml":
            serialize_bom({}, "xml")  # refuses with the reason, before any work
        if not model_dir.is_dir():
            raise InputError(f"model directory {model_dir} does not exist or is not a "
                             "directory")
        card = load_model_card(model_card) if model_card else None
        ds = [dataset_from_path(p, n) for p, n in map(_parse_dataset, datasets)]
        mets = load_metrics(metrics) if metrics else None
        step_refs = [_parse_step(s) for s in steps]
        model_name = name or (card or {}).get("name") or model_dir.resolve().name
        info = model_info_from_dir(model_dir, model_name, model_version)
        report = None
        if do_scan:
            from modelseal.safety import scan_model

            report = scan_model(model_dir)
        doc = build_bom(info, model_card=card, datasets=ds, metrics=mets,
                        environment=environment, steps=step_refs, safety=report,
                        spec_version=spec, environment_files=env_files)
        data = serialize_bom(doc, fmt)
        if output is None:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        else:
            tmp = output.with_name(output.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(output)
            click.echo(f"wrote {output} (CycloneDX {spec}, {len(doc.get('components', []))} "
                       "components, validated)", err=True)


_VERDICT_STYLE = {"unsafe": "bold red", "suspicious": "yellow", "unknown": "dim",
                  "safe": "green", "no-code-format": "green"}


@click.command()
@click.argument("model_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "json_mode", is_flag=True,
              help="Print the model-safety predicate as JSON.")
@click.option("--strict", is_flag=True, help="Fail on suspicious files too, not only unsafe.")
def scan(model_dir: Path, json_mode: bool, strict: bool) -> None:
    """Scan MODEL_DIR for files that would run code when loaded (pickles, PyTorch checkpoints,
    joblib, numpy object arrays). Exits 10 when an unsafe file is found."""
    with errors_to_exit(json_mode):
        from modelseal.errors import VerificationError
        from modelseal.safety import safety_predicate, scan_model, unsafe_findings

        report = scan_model(model_dir)
        pred = safety_predicate(report)
        if json_mode:
            emit_json(pred)
        else:
            from rich.markup import escape
            from rich.table import Table

            t = Table(title=f"{model_dir} — scanned with {report.scanner} "
                            f"{report.scanner_version}")
            for col in ("file", "format", "verdict", "imports"):
                t.add_column(col)
            for f in report.files:
                imports = ", ".join(
                    f"{x.callable}" + (f" (in {x.member})" if x.member else "")
                    for x in f.findings if x.severity != "innocuous")
                t.add_row(escape(f.path), f.format,
                          f"[{_VERDICT_STYLE.get(f.verdict, 'default')}]{f.verdict}[/]",
                          escape(imports or (f.note or "")))
            console().print(t)
        problems = unsafe_findings(pred, include_suspicious=strict)
        if problems:
            raise VerificationError(
                f"{len(problems)} dangerous import(s) found: " + "; ".join(problems[:5]),
                reasons=problems,
                hint="do not load these files; prefer safetensors for weights")
        if not json_mode:
            c = report.counts()
            console(stderr=True).print(
                f"no unsafe files ({c['safe']} safe pickles, {c['no-code-format']} no-code "
                f"formats, {c['suspicious']} suspicious, {c['unknown']} unknown)")
