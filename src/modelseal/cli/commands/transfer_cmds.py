"""``modelseal push``, ``pull`` and ``inspect``: a model into a registry (or an ``oci:``
layout) and back out, and what it holds.

Thin: each command parses, makes one library call (``modelseal.transfer.publish``,
``pull``/``pull_verified``, ``fetch_model_manifest``), and renders.
"""

from __future__ import annotations

from typing import Any

import click

from modelseal.cli.options import open_ref, registry_options, store_kwargs, tsa_option
from modelseal.cli.render import (
    console,
    emit_json,
    errors_to_exit,
    escape,
    human_size,
    make_progress,
    note,
)


@click.command()
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
        from modelseal.transfer import publish

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
        r, store = open_ref(ref, opts)
        signer = None
        if kw["signer"]:
            from modelseal.attest.signers import load_signer

            signer = load_signer(kw["signer"])  # before any upload: a bad key fails early
        done = publish(model_dir, store, r, md, signer=signer,
                       attestations=[kw["attestations_dir"]] if kw["attestations_dir"] else [],
                       signed_dir=kw["attestations_dir"],
                       command=["modelseal", "push", model_dir, ref],
                       role_overrides=parse_role_overrides(kw["role_overrides"]),
                       allow_retag=kw["allow_retag"], follow_symlinks=kw["follow_symlinks"],
                       cache=None if kw["no_cache"] else DigestCache(default_cache_path()),
                       progress=make_progress(json_mode),
                       exclude=exclude_patterns(kw["exclude"],
                                                default_excludes=not kw["no_default_excludes"]))
        result = done.push
        for name, why in done.skipped.items():
            note(f"warning: {name} not signed: {why}")
        attached, already = done.newly_attached(), done.already_attached()
        if json_mode:
            emit_json(done.to_dict())
        else:
            c = console()
            for msg in result.notes:  # temporaries an interrupted earlier push left
                console(stderr=True).print(f"note: {msg}", soft_wrap=True, markup=False)
            state = "unchanged" if result.unchanged else (
                f"{result.uploaded_blobs} blobs uploaded ({human_size(result.uploaded_bytes)})")
            c.print(f"pushed {result.files} files ({human_size(result.bytes_total)}), {state}")
            c.print(f"{r.base}@{result.digest}", soft_wrap=True)
            if attached or already:
                c.print(f"{len(attached)} attestations attached"
                        + (f", {len(already)} already attached" if already else ""))


@click.command()
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
            for msg in result.notes:  # what an interrupted earlier pull left, now cleaned
                console(stderr=True).print(f"note: {msg}", soft_wrap=True, markup=False)
            if verified is not None:
                console().print(escape(f"verified against {policy_file}: "
                                       f"{', '.join(s.name for s in verified.steps)}"),
                                soft_wrap=True)
            console().print(escape(f"pulled {result.files} files "
                                   f"({human_size(result.bytes_total)}) into {result.target}\n"
                                   f"{r.base}@{result.digest}"), soft_wrap=True)


@click.command()
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
    print_bom_summary(summary, source=found.source, referrer=found.referrer)


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
