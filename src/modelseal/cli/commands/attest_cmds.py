"""``modelseal keygen``, ``modelseal run`` and ``modelseal attest``: sign what a pipeline does.

Thin: each command parses, calls modelseal.attest, prints. Heavy libraries load inside the
command bodies so that ``modelseal --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from modelseal.cli.options import (
    load_signer,
    open_ref,
    registry_options,
    signer_options,
    signer_options_optional,
    store_kwargs,
)
from modelseal.cli.render import emit_json, errors_to_exit, note

F = TypeVar("F", bound=Callable[..., Any])


# ---- keygen ----------------------------------------------------------------------------------

@click.command()
@click.argument("name", type=click.Path(dir_okay=False, path_type=str))
@click.option("--algorithm", type=click.Choice(["ecdsa-p256", "ecdsa-p384", "ed25519"]),
              default="ecdsa-p256", show_default=True, help="Key type.")
@click.option("--passphrase/--no-passphrase", default=False,
              help="Encrypt the private key; the passphrase is read from "
                   "MODELSEAL_KEY_PASSPHRASE, or asked for on a terminal.")
@click.option("--json", "json_mode", is_flag=True, help="Machine-readable output.")
def keygen(name: str, algorithm: str, passphrase: bool, json_mode: bool) -> None:
    """Create NAME.key (private, mode 0600) and NAME.pub (public) for signing."""
    with errors_to_exit(json_mode):
        import os

        from modelseal.attest import signers
        from modelseal.errors import UsageError

        secret: bytes | None = None
        if passphrase:
            env = os.environ.get(signers.PASSPHRASE_ENV)
            if env is None:
                if not sys.stdin.isatty():
                    raise UsageError("--passphrase needs a terminal or "
                                     f"{signers.PASSPHRASE_ENV}")
                env = click.prompt("passphrase", hide_input=True, confirmation_prompt=True,
                                   err=True)
            secret = env.encode()
            if not secret:
                raise UsageError("an empty passphrase does not protect the key")
        key, pub = signers.keygen(name, algorithm=algorithm,  # type: ignore[arg-type]
                                  passphrase=secret)
        kid = signers.keyid(signers.load_public_key(pub))
        if json_mode:
            emit_json({"private_key": str(key), "public_key": str(pub), "keyid": kid,
                       "algorithm": algorithm})
        else:
            click.echo(f"private key: {key} (keep it secret)\npublic key:  {pub}\n"
                       f"keyid:       {kid}")


# ---- run -------------------------------------------------------------------------------------

@click.command(context_settings={"allow_interspersed_args": False})
@click.option("--step", "-n", required=True, help="Step name (train, evaluate, package...).")
@signer_options
@click.option("--materials", "-m", multiple=True, metavar="PATH",
              help="File or directory read by the step, hashed before it runs (repeatable).")
@click.option("--products", "-p", multiple=True, metavar="PATH",
              help="File or directory written by the step, hashed after it ran (repeatable).")
@click.option("--exclude", multiple=True, metavar="PATTERN",
              help="gitignore-style pattern of paths to leave out (repeatable).")
@click.option("--no-default-excludes", is_flag=True,
              help="Also record .git, .modelseal, __pycache__, *.pyc and .DS_Store.")
@click.option("--base-dir", type=click.Path(file_okay=False, exists=True), default=None,
              help="Directory the command runs in and paths are recorded relative to.")
@click.option("--attestations-dir", type=click.Path(file_okay=False), default=None,
              help="Where to write the signed link (default: BASE_DIR/.modelseal/attestations).")
@click.option("--record-streams", is_flag=True,
              help="Record the command's stdout and stderr in the link (still shown).")
@click.option("--env", "env_keys", multiple=True, metavar="NAME",
              help="Environment variable to record in the link (repeatable).")
@click.option("--digest-cache", is_flag=True,
              help="Reuse digests of files unchanged since they were last hashed.")
@click.option("--json", "json_mode", is_flag=True, help="Print a JSON summary on stdout.")
@click.argument("command", nargs=-1, required=True, metavar="-- CMD [ARGS]...")
def run(step: str, command: tuple[str, ...], json_mode: bool, **kw: Any) -> None:
    """Run CMD as pipeline step STEP and sign an in-toto link for it.

    Materials are hashed before, products after; the signed Statement (predicate
    https://in-toto.io/attestation/link/v0.3, subjects = products) is written atomically to the
    attestations directory. With --json, stdout carries only the JSON summary: CMD's own
    stdout goes to stderr. The command's exit code is passed on, and a failing command is
    still recorded. The signer is loaded first: a bad key fails before the command runs.
    """
    rc = 0
    with errors_to_exit(json_mode):
        from modelseal.attest.output import check_step_name
        from modelseal.attest.steps import run_step
        from modelseal.digest import DigestCache, default_cache_path

        check_step_name(step)
        signer = load_signer(kw)
        cache = DigestCache(default_cache_path()) if kw["digest_cache"] else None
        streams = kw["record_streams"]
        outcome = run_step(
            step, list(command), signer,
            materials=kw["materials"], products=kw["products"],
            attestations_dir=kw["attestations_dir"], exclude=kw["exclude"],
            default_excludes=not kw["no_default_excludes"], base_dir=kw["base_dir"],
            capture_output=streams, env_keys=kw["env_keys"], cache=cache,
            # --json: stdout is modelseal's JSON alone; the command's output goes to stderr
            tee_stdout=(sys.stderr.buffer if json_mode else sys.stdout.buffer)
            if streams else None,
            tee_stderr=sys.stderr.buffer if streams else None, stdout_to_stderr=json_mode)
        rc = outcome.returncode
        pred = outcome.statement["predicate"]
        from modelseal.attest.statement import MATERIALS_SUBJECT

        n_products = sum(1 for s in outcome.statement["subject"]
                         if s.get("name") != MATERIALS_SUBJECT)
        if json_mode:
            emit_json({"step": step, "returncode": rc, "attestation": str(outcome.attestation),
                       "keyid": outcome.keyid, "materials": len(pred["materials"]),
                       "products": n_products,
                       "predicateType": outcome.statement["predicateType"]})
        else:
            note(f"modelseal: step {step!r} exited {rc}; {len(pred['materials'])} materials, "
                  f"{n_products} products; signed link: "
                  f"{outcome.attestation}")
    sys.exit(rc)


# ---- attest ----------------------------------------------------------------------------------

def _subjects(kw: dict[str, Any]) -> list[tuple[str, str]]:
    """Subjects from --subject paths, --subject-digest NAME=sha256:HEX and --subject-ref REF."""
    from modelseal.attest.statement import resource_descriptor
    from modelseal.attest.steps import hash_artifacts
    from modelseal.errors import UsageError

    out = hash_artifacts(kw.pop("subject"), base_dir=kw.get("base_dir"),
                         exclude=kw.get("exclude", ())) if kw.get("subject") else []
    kw.pop("subject", None)
    for item in kw.pop("subject_digest", ()):
        name, sep, digest = item.rpartition("=")
        if not sep or not name:
            raise UsageError(f"--subject-digest {item!r}: write NAME=sha256:HEX")
        out.append((name, resource_descriptor(name, digest)["digest"]["sha256"]))
    refs = kw.pop("subject_ref", ())
    if refs:
        from modelseal.attest.attachments import subject_of

        opts = store_kwargs(kw)
        for text in refs:
            r, store = open_ref(text, opts)
            desc = subject_of(store, r.reference)
            out.append((r.base, desc.digest.partition(":")[2]))
    if not out:
        raise UsageError("nothing to attest about",
                         hint="give --subject PATH, --subject-digest or --subject-ref REF")
    return out


def subject_options(f: F) -> F:
    f = registry_options(f)
    f = click.option("--base-dir", type=click.Path(file_okay=False, exists=True), default=None,
                     help="Subject paths are recorded relative to this directory.")(f)
    f = click.option("--subject-ref", multiple=True, metavar="REF",
                     help="A model in a registry or OCI layout: the subject is its manifest.")(f)
    f = click.option("--subject-digest", multiple=True, metavar="NAME=sha256:HEX",
                     help="A subject given by name and digest (repeatable).")(f)
    f = click.option("--subject", "-s", multiple=True, metavar="PATH",
                     help="File or directory the attestation is about (repeatable).")(f)
    return f


def output_options(f: F) -> F:
    f = click.option("--json", "json_mode", is_flag=True, help="Print a JSON summary.")(f)
    f = click.option("--attestations-dir", type=click.Path(file_okay=False), default=None,
                     help="Directory for the bundle when -o is not given "
                          "(default: .modelseal/attestations).")(f)
    f = click.option("--output", "-o", type=click.Path(dir_okay=False, allow_dash=True),
                     help="Write the bundle here ('-' for stdout).")(f)
    f = click.option("--name", "att_name", default=None,
                     help="Name used in the bundle's file name (default: the command's).")(f)
    return f


def _sign_and_write(st: dict[str, Any], signer: Any, default_name: str,
                    kw: dict[str, Any], extra: dict[str, Any] | None = None) -> Path | None:
    """Sign and write by the one naming rule (attest.output); ``-o -`` prints the bundle."""
    from modelseal.attest import output

    out = kw.get("output")
    path: Path | None
    if out == "-":
        sys.stdout.buffer.write(output.sign(st, signer) + b"\n")
        sys.stdout.flush()
        return None
    # --base-dir only says how subjects are named; outputs go where the user is.
    path = output.sign_and_write(st, signer, kw.get("att_name") or default_name,
                                 directory=kw.get("attestations_dir"), path=out or None).path
    summary = {"attestation": str(path), "predicateType": st["predicateType"],
               "subjects": len(st["subject"]), **(extra or {})}
    if kw.get("json_mode"):
        emit_json(summary)
    else:
        note(f"modelseal: signed {st['predicateType']} about {len(st['subject'])} subject(s): "
             f"{path}")
    return path


def _attest_custom(predicate_type: str | None, predicate: str | None, kw: dict[str, Any]) -> None:
    from modelseal.attest.statement import statement
    from modelseal.errors import InputError, UsageError

    if not predicate_type or not predicate:
        raise UsageError("give --predicate-type URI and --predicate FILE, or use a subcommand",
                         hint="modelseal attest provenance|evaluation --help")
    if not kw.get("signer"):
        raise UsageError("--signer is required (or set MODELSEAL_SIGNER)")
    try:
        pred = json.loads(Path(predicate).read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read predicate {predicate}: {e}") from e
    if not isinstance(pred, dict):
        raise InputError(f"predicate {predicate} must be a JSON object")
    signer = load_signer(kw)
    st = statement(_subjects(kw), predicate_type, pred)
    _sign_and_write(st, signer, "attestation", kw)


@click.group(invoke_without_command=True, subcommand_metavar="[provenance|evaluation] ...")
@click.option("--predicate-type", "-t", metavar="URI", help="The predicate's type URI.")
@click.option("--predicate", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="JSON file with the predicate.")
@subject_options
@signer_options_optional
@output_options
@click.pass_context
def attest(ctx: click.Context, /, predicate_type: str | None, predicate: str | None,
           **kw: Any) -> None:
    """Sign an in-toto Statement about files or a model.

    Without a subcommand: any predicate, given as a type URI and a JSON file, e.g.
    `modelseal attest -t https://example.com/approval/v1 --predicate approval.json
    --subject model/ --signer key.key`. The subcommands build the training provenance and the
    evaluation predicates (their options go after the subcommand's name).
    """
    if ctx.invoked_subcommand is not None:
        given = [k for k, v in kw.items() if v not in (None, False, ())]
        if predicate_type or predicate or given:
            raise click.UsageError(f"options go after `attest {ctx.invoked_subcommand}`")
        return
    with errors_to_exit(kw.get("json_mode", False)):
        _attest_custom(predicate_type, predicate, kw)


def _descriptor_arg(text: str, what: str, base_dir: str | None) -> dict[str, Any]:
    """NAME=sha256:HEX[@URI], or a path that is hashed (a directory: the directory digest)."""
    from modelseal.attest.statement import resource_descriptor
    from modelseal.attest.steps import describe_path

    name, sep, rest = text.partition("=")
    if sep and rest.startswith("sha256:"):
        digest, _, uri = rest.partition("@")
        return resource_descriptor(name, digest, uri=uri or None)
    return describe_path(text, base_dir=base_dir)


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    from modelseal._util.time import parse_time
    from modelseal.errors import InputError, UsageError

    try:
        return parse_time(text)
    except InputError as e:
        raise UsageError(f"time {text!r} is not ISO 8601") from e


@attest.command("provenance")
@click.option("--hyperparameters", type=click.Path(exists=True, dir_okay=False),
              help="JSON or YAML file of hyperparameters (externalParameters).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A hyperparameter (repeatable; JSON values allowed).")
@click.option("--dataset", "datasets", multiple=True, metavar="PATH|NAME=sha256:HEX[@URI]",
              help="Training dataset (repeatable).")
@click.option("--base-model", "base_models", multiple=True, metavar="PATH|NAME=sha256:HEX[@URI]",
              help="Base model fine-tuned from (repeatable).")
@click.option("--code-repo", help="Code repository URL (default: from CI).")
@click.option("--code-commit", help="Code commit (default: from CI).")
@click.option("--builder-id", help="Builder id (default: from CI, else 'local').")
@click.option("--started-on", metavar="ISO8601", help="When training started.")
@click.option("--finished-on", metavar="ISO8601", help="When training finished (default: now).")
@subject_options
@signer_options
@output_options
def attest_provenance(**kw: Any) -> None:
    """Sign SLSA provenance v1 for a training run (subjects: the trained model files)."""
    with errors_to_exit(kw.get("json_mode", False)):
        from modelseal._util.time import now
        from modelseal.attest.statement import ci_context, provenance_predicate, statement
        from modelseal.errors import InputError, UsageError
        from modelseal.formats import SLSA_PROVENANCE_PREDICATE

        hp: dict[str, Any] = {}
        if kw["hyperparameters"]:
            import yaml

            try:
                loaded = yaml.safe_load(Path(kw["hyperparameters"]).read_text())
            except (OSError, yaml.YAMLError) as e:
                raise InputError(f"cannot read {kw['hyperparameters']}: {e}") from e
            if not isinstance(loaded, dict):
                raise InputError(f"{kw['hyperparameters']} must hold a mapping")
            hp.update(loaded)
        for p in kw["params"]:
            k, sep, v = p.partition("=")
            if not sep or not k:
                raise UsageError(f"--param {p!r}: write KEY=VALUE")
            try:
                hp[k] = json.loads(v)
            except ValueError:
                hp[k] = v
        signer = load_signer(kw)
        base = None  # datasets and base models are paths as the user typed them
        pred = provenance_predicate(
            hyperparameters=hp,
            datasets=[_descriptor_arg(d, "dataset", base) for d in kw["datasets"]],
            base_models=[_descriptor_arg(b, "base model", base) for b in kw["base_models"]],
            code_repository=kw["code_repo"], code_commit=kw["code_commit"],
            builder_id=kw["builder_id"], started_on=_parse_time(kw["started_on"]),
            finished_on=_parse_time(kw["finished_on"]) or now(), ci=ci_context())
        st = statement(_subjects(kw), SLSA_PROVENANCE_PREDICATE, pred)
        _sign_and_write(st, signer, "provenance", kw)


@attest.command("evaluation")
@click.option("--metrics", required=True, type=click.Path(exists=True, dir_okay=False),
              help="JSON file of metrics, e.g. {\"accuracy\": 0.93}.")
@click.option("--threshold", "thresholds", multiple=True, metavar="METRIC>=VALUE",
              help="Declared threshold (repeatable): >= <= > < == !=.")
@click.option("--dataset", "datasets", multiple=True, metavar="PATH|NAME=sha256:HEX[@URI]",
              help="Evaluation dataset, recorded as configuration (repeatable).")
@click.option("--url", help="Link to the evaluation run.")
@subject_options
@signer_options
@output_options
def attest_evaluation(**kw: Any) -> None:
    """Sign a test-result attestation with the metrics; fail when a threshold is missed.

    The FAILED attestation is written and signed all the same (it is evidence too), then the
    command exits 1. Without any --threshold the result records metrics only: a verifier
    that requires a test result refuses it (it checked nothing).
    """
    failed: list[str] = []
    with errors_to_exit(kw.get("json_mode", False)):
        from modelseal.attest.statement import evaluation_predicate, parse_threshold, statement
        from modelseal.errors import InputError
        from modelseal.formats import TEST_RESULT_PREDICATE

        ths = [parse_threshold(t) for t in kw["thresholds"]]
        try:
            metrics = json.loads(Path(kw["metrics"]).read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read metrics {kw['metrics']}: {e}") from e
        if not isinstance(metrics, dict):
            raise InputError(f"metrics {kw['metrics']} must be a JSON object")
        signer = load_signer(kw)
        base = None  # metrics and datasets are paths as the user typed them
        metrics_rd = _descriptor_arg(kw["metrics"], "metrics", base)
        config = [metrics_rd, *(_descriptor_arg(d, "dataset", base) for d in kw["datasets"])]
        pred = evaluation_predicate(metrics, ths, configuration=config, url=kw["url"])
        failed = pred["failedTests"]
        st = statement(_subjects(kw), TEST_RESULT_PREDICATE, pred)
        _sign_and_write(st, signer, "evaluation", kw,
                        extra={"result": pred["result"], "failedTests": failed,
                               "passedTests": pred["passedTests"]})
        if failed and not kw.get("json_mode"):
            note("modelseal: evaluation FAILED: " + ", ".join(failed))
        if not ths:
            note("modelseal: note: no --threshold: this evaluation checked nothing, and a "
                 "policy that requires a test result refuses it (docs/threat-model.md)")
    if failed:
        sys.exit(1)

