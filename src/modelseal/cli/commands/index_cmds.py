"""``index``, ``lineage``, ``search``: the evidence index (docs/lineage.md).

Thin: parse, call ``modelseal.index``, render. SQLAlchemy is imported inside the commands so
that ``modelseal --help`` stays fast.
"""

from __future__ import annotations

from typing import Any

import click

from modelseal.cli.options import registry_options, store_kwargs
from modelseal.cli.render import console, emit_json, errors_to_exit

DB_HELP = ("Index database: sqlite:///PATH, a path, or postgresql://USER@HOST:PORT/DB "
           "(env MODELSEAL_DB; default: a SQLite file in the user's data directory).")


def _db_option(f: Any) -> Any:
    return click.option("--db", "db", metavar="URL", default=None, help=DB_HELP)(f)


@click.command()
@click.argument("sources", nargs=-1, required=True, metavar="REF_OR_REPO...")
@_db_option
@click.option("--policy", "policy_file", type=click.Path(exists=True, dir_okay=False),
              envvar="MODELSEAL_POLICY",
              help="Verify the evidence against this policy's layout (without it nothing is "
                   "indexed as verified).")
@click.option("--json", "json_mode", is_flag=True, help="Machine-readable output.")
@registry_options
def index(sources: tuple[str, ...], db: str | None, policy_file: str | None, json_mode: bool,
          **kw: Any) -> None:
    """Crawl repositories or oci: directories (tags, manifests, referrers) into the index.

    Incremental: a model whose referrers (content addresses) and policy are unchanged is not
    fetched again."""
    with errors_to_exit(json_mode):
        from modelseal.index.crawler import crawl
        from modelseal.index.schema import connect, database_errors

        engine = connect(db)
        with database_errors(db):
            report = crawl(engine, list(sources), policy=policy_file,
                           registry_options=store_kwargs(kw))
        if json_mode:
            emit_json(report.to_dict())
            return
        console().print(
            f"indexed {len(report.sources)} source(s): {report.models} manifests "
            f"({report.indexed} fetched, {report.unchanged} unchanged, {report.removed} "
            f"removed); {report.attestations} attestations read, {report.verified} verified, "
            f"{report.unverified} not")


@click.command()
@click.option("--dataset", "dataset", metavar="DIGEST|NAME",
              help="Models trained or evaluated on this dataset (digest, name or URI).")
@click.option("--model", "model", metavar="REF",
              help="A model's datasets, code, base models, signers, stages and derivatives.")
@click.option("--verified-only", is_flag=True, help="Only answers resting on verified evidence.")
@_db_option
@click.option("--json", "json_mode", is_flag=True, help="Machine-readable output.")
def lineage(dataset: str | None, model: str | None, verified_only: bool, db: str | None,
            json_mode: bool) -> None:
    """Where a dataset went, or where a model came from, from the index."""
    with errors_to_exit(json_mode):
        from modelseal.errors import UsageError
        from modelseal.index.queries import lineage_dataset, lineage_model
        from modelseal.index.schema import connect, database_errors

        if (dataset is None) == (model is None):
            raise UsageError("give exactly one of --dataset DIGEST|NAME or --model REF")
        engine = connect(db)
        if dataset is not None:
            with database_errors(db):
                out = lineage_dataset(engine, dataset, verified_only=verified_only)
            if json_mode:
                emit_json(out)
            else:
                _print_dataset(out)
            return
        assert model is not None
        with database_errors(db):
            res = lineage_model(engine, model)
        if verified_only:
            for r in res["results"]:
                for k in ("datasets", "code", "baseModels", "other", "derived"):
                    r[k] = [x for x in r[k] if x["verified"]]
        if json_mode:
            emit_json(res)
        else:
            _print_model(res)


def _mark(x: dict[str, Any]) -> str:
    return "verified" if x["verified"] else f"UNVERIFIED ({x.get('reason') or '?'})"


def _print_dataset(out: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    c = console()
    c.print(f"[bold]dataset {escape(out['dataset'])}[/]  names: "
            f"{escape(', '.join(out['names']) or '-')}", soft_wrap=True)
    t = Table(box=None)
    for col in ("model", "stage", "role", "step", "signer", "time", "evidence"):
        t.add_column(col, overflow="fold")
    for x in out["models"]:
        m = x["model"]
        label = f"{m['repo']}:{','.join(m['tags'])}" if m["tags"] else m["repo"]
        t.add_row(escape(f"{label}\n{m['digest'][:19]}"), escape(m["stage"] or "-"), x["role"],
                  escape(x["step"] or "-"), escape(x["signer"] or "-"), x["time"] or "?",
                  escape(f"{x['attestation'][:19]} {_mark(x)}"))
    c.print(t)
    c.print(f"{out['verified']} answer(s) on verified evidence, {out['unverified']} not")


def _print_model(res: dict[str, Any]) -> None:
    from rich.markup import escape

    c = console()
    for r in res["results"]:
        m = r["model"]
        c.print(f"[bold]{escape(m['repo'])}[/] {m['digest']}  tags: "
                f"{escape(', '.join(m['tags']) or '-')}", soft_wrap=True)
        c.print(f"stage: {escape(m['stage'] or '-')} ({escape(m['stageBasis'] or '')})",
                soft_wrap=True)
        for title, key in (("datasets", "datasets"), ("code", "code"),
                           ("base models", "baseModels")):
            c.print(f"[bold]{title}[/]")
            for x in r[key]:
                c.print(f"  {x['role']}: {escape(x['name'] or '-')} {x['digest'] or ''} "
                        f"by {escape(x['signer'] or '?')}: {escape(_mark(x))}", soft_wrap=True)
        c.print("[bold]signers[/]")
        for s in r["signers"]:
            c.print(f"  {escape(s['signer'])}: {escape(', '.join(s['steps']) or '-')}")
        c.print("[bold]stage history[/]")
        for h in r["stageHistory"]:
            c.print(f"  {h['sequence']}: {h['action']} {h['stage'] or ''} at {h['time'] or '?'}"
                    f" by {escape(', '.join(h['signers']))}")
        c.print("[bold]derived models[/]")
        for x in r["derived"]:
            c.print(f"  {escape(x['repo'])} {x['digest'][:19]} ({escape(_mark(x))})")


@click.command()
@click.option("--name", help="Model name (* matches anything).")
@click.option("--stage", help="Current (verified) stage.")
@click.option("--signer", help="A functionary who signed an attestation of the model.")
@click.option("--predicate-type", help="A predicate type the model has an attestation of.")
@click.option("--since", metavar="TIME", help="Attestations at or after (ISO 8601, UTC).")
@click.option("--until", metavar="TIME", help="Attestations at or before (ISO 8601, UTC).")
@click.option("--include-unverified", is_flag=True,
              help="Let unverified attestations match the signer/type/time filters.")
@click.option("--limit", type=int, default=1000, show_default=True)
@_db_option
@click.option("--json", "json_mode", is_flag=True, help="Machine-readable output.")
def search(db: str | None, json_mode: bool, include_unverified: bool, limit: int,
           **filters: Any) -> None:
    """Models in the index matching every filter."""
    with errors_to_exit(json_mode):
        from modelseal.index.queries import search as do_search
        from modelseal.index.schema import connect, database_errors

        engine = connect(db)
        with database_errors(db):
            rows = do_search(engine, verified_only=not include_unverified, limit=limit,
                             **filters)
        if json_mode:
            emit_json({"models": rows})
            return
        from rich.markup import escape
        from rich.table import Table

        t = Table(box=None)
        for col in ("repo", "tags", "digest", "name", "version", "stage"):
            t.add_column(col, overflow="fold")
        for m in rows:
            t.add_row(escape(m["repo"]), escape(", ".join(m["tags"])), m["digest"][:19],
                      escape(m["name"] or "-"), escape(m["version"] or "-"),
                      escape(m["stage"] or "-"))
        console().print(t)
