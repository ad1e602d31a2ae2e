"""``attach`` and ``attestations``: attestations as OCI referrers of a model."""

from __future__ import annotations

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


@click.command()
@click.argument("ref")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--json", "json_mode", is_flag=True, help="Machine-readable output.")
@registry_options
def attach(ref: str, files: tuple[str, ...], json_mode: bool, **kw: Any) -> None:
    """Attach Sigstore bundles (FILES, or directories of them) to the model at REF."""
    with errors_to_exit(json_mode):
        from modelseal.attestations import attach_bundles, bundle_files, subject_of

        r, store = open_ref(ref, store_kwargs(kw))
        subject = subject_of(store, r.reference)
        attached = attach_bundles(store, subject, bundle_files(files))
        if json_mode:
            emit_json({"subject": subject.digest,
                       "attached": [{"digest": a.descriptor.digest, "tag": a.tag}
                                    for a in attached]})
        else:
            c = console()
            for a in attached:
                c.print(escape(f"attached {a.descriptor.digest} ({a.tag})"), soft_wrap=True)
            c.print(escape(f"{len(attached)} attestations attached to {r.base}@{subject.digest}"),
                    soft_wrap=True)


@click.command()
@click.argument("ref")
@click.option("--predicate-type", help="Only attestations with this predicate type.")
@click.option("--download", type=click.Path(file_okay=False),
              help="Write each bundle into this directory.")
@click.option("--json", "json_mode", is_flag=True, help="Machine-readable output.")
@registry_options
def attestations(ref: str, predicate_type: str | None, download: str | None, json_mode: bool,
                 **kw: Any) -> None:
    """List the attestations attached to the model at REF (signer as claimed, unverified)."""
    with errors_to_exit(json_mode):
        from modelseal.attestations import list_attestations

        r, store = open_ref(ref, store_kwargs(kw))
        digest = store.resolve(r.reference)
        if digest is None:
            from modelseal.errors import NotFoundError

            raise NotFoundError(f"{r} does not exist")
        infos = list_attestations(store, digest, predicate_type=predicate_type, fetch=True)
        if download:
            out = Path(download)
            out.mkdir(parents=True, exist_ok=True)
            for info in infos:
                assert info.bundle is not None
                name = info.descriptor.digest.partition(":")[2][:16] + ".sigstore.json"
                (out / name).write_bytes(info.bundle)
        if json_mode:
            emit_json({"subject": digest, "attestations": [i.to_dict() for i in infos]})
            return
        from rich.table import Table

        t = Table(box=None)
        for col in ("predicate type", "signer (claimed)", "created", "digest"):
            t.add_column(col, overflow="fold", no_wrap=col in ("digest", "created"))
        for i in infos:
            signer = i.signer or "?"
            if len(signer) == 64 and all(ch in "0123456789abcdef" for ch in signer):
                signer = f"key {signer[:16]}"  # a keyid; --json has it whole
            # unsigned, from whoever pushed the referrer: text, never markup
            t.add_row(escape(i.predicate_type or "?"), escape(signer), escape(i.created or "?"),
                      escape(i.descriptor.digest))
        c = console()
        c.print(escape(f"{r.base}@{digest}"), soft_wrap=True)
        c.print(t)
        c.print(escape(f"{len(infos)} attestations"
                       + (f", written to {download}" if download else "")))
