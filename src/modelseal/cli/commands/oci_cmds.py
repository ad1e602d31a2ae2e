"""``attach`` and ``attestations``: attestations as OCI referrers of a model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from modelseal.cli.options import open_ref, registry_options, store_kwargs
from modelseal.cli.render import console, emit_json, errors_to_exit, escape


@click.command()
@click.argument("ref")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--json", "json_mode", is_flag=True, help="Machine-readable output.")
@registry_options
def attach(ref: str, files: tuple[str, ...], json_mode: bool, **kw: Any) -> None:
    """Attach Sigstore bundles (FILES, or directories of them) to the model at REF.

    A bundle already attached (the same Statement with the same signatures) is not attached
    again: re-running an attach adds nothing."""
    with errors_to_exit(json_mode):
        from modelseal.attest.attachments import attach_bundles, bundle_files, subject_of

        r, store = open_ref(ref, store_kwargs(kw))
        subject = subject_of(store, r.reference)
        attached = attach_bundles(store, subject, bundle_files(files))
        new = [a for a in attached if not a.already_attached]
        if json_mode:
            emit_json({"subject": subject.digest,
                       "attached": [{"digest": a.digest, "tag": a.tag, "indexed": a.indexed}
                                    for a in new],
                       "alreadyAttached": [{"digest": a.digest, "source": a.source}
                                           for a in attached if a.already_attached]})
        else:
            c = console()
            for a in attached:
                if a.already_attached:
                    c.print(escape(f"already attached: {a.source} ({a.digest})"), soft_wrap=True)
                else:
                    note = ("" if a.indexed is not False else
                            "; not in the fallback index, found through its tag")
                    c.print(escape(f"attached {a.digest} ({a.tag}{note})"), soft_wrap=True)
            c.print(escape(f"{len(new)} attestations attached to {r.base}@{subject.digest}"
                           + (f", {len(attached) - len(new)} already attached"
                              if len(new) < len(attached) else "")), soft_wrap=True)


class _WithShow(click.Command):
    """``attestations REF`` lists; ``attestations show REF DIGEST|FILE`` decodes one bundle."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] == "show":
            ctx.exit(attestations_show.main(args[1:], prog_name=f"{ctx.command_path} show",
                                            standalone_mode=False) or 0)
        return super().parse_args(ctx, args)


@click.command(cls=_WithShow)
@click.argument("ref")
@click.option("--predicate-type", help="Only attestations with this predicate type.")
@click.option("--download", type=click.Path(file_okay=False),
              help="Write each bundle into this directory.")
@click.option("--read-all", is_flag=True,
              help="Read every bundle for its claimed signer (default: the newest 100; "
                   "--download reads every one).")
@click.option("--json", "json_mode", is_flag=True, help="Machine-readable output.")
@registry_options
def attestations(ref: str, predicate_type: str | None, download: str | None, read_all: bool,
                 json_mode: bool, **kw: Any) -> None:
    """List the attestations attached to the model at REF (signer as claimed, unverified).

    Every one is listed; the newest 100 bundles are read for the signer they claim
    (--read-all: every one). `attestations show REF DIGEST|FILE` decodes one of them.
    """
    with errors_to_exit(json_mode):
        from modelseal.attest.attachments import MAX_LISTED_READS, list_attestations

        r, store = open_ref(ref, store_kwargs(kw))
        digest = store.resolve(r.reference)
        if digest is None:
            from modelseal.errors import NotFoundError

            raise NotFoundError(f"{r} does not exist")
        # an unreadable referrer (deleted, altered, malformed) is listed with its reason
        infos = list_attestations(store, digest, predicate_type=predicate_type, fetch=True,
                                  keep_unreadable=True,
                                  read_limit=None if read_all or download else MAX_LISTED_READS)
        unreadable = sum(1 for i in infos if i.error is not None)
        not_read = sum(1 for i in infos if not i.read)
        paths: dict[str, dict[str, Any]] = {}
        if download:
            from modelseal.audit.evidence import download as write_evidence

            # STEP.PREDICATE.SIGNER.sigstore.json and an index.json (docs/auditor.md)
            paths = {e["digest"]: e for e in write_evidence(
                [i for i in infos if i.bundle is not None], Path(download))}
        if json_mode:
            emit_json({"subject": digest, "unread": not_read, "attestations": [
                {**i.to_dict(), **({"path": paths[i.descriptor.digest]["path"],
                                    "step": paths[i.descriptor.digest]["step"]}
                                   if i.descriptor.digest in paths else {})}
                for i in infos]})
            return
        from rich.table import Table

        t = Table(box=None)
        for col in ("predicate type", "signer (claimed)", "created", "digest"):
            t.add_column(col, overflow="fold", no_wrap=col in ("digest", "created"))
        for i in infos:
            signer = i.signer or ("?" if i.read else "(not read)")
            if i.error is not None:
                signer = f"unreadable: {i.error}"
            if len(signer) == 64 and all(ch in "0123456789abcdef" for ch in signer):
                signer = f"key {signer[:16]}"  # a keyid; --json has it whole
            # unsigned, from whoever pushed the referrer: text, never markup
            t.add_row(escape(i.predicate_type or "?"), escape(signer), escape(i.created or "?"),
                      escape(i.descriptor.digest))
        c = console()
        c.print(escape(f"{r.base}@{digest}"), soft_wrap=True)
        c.print(t)
        c.print(escape(f"{len(infos)} attestations"
                       + (f", {unreadable} unreadable" if unreadable else "")
                       + (f", {not_read} older ones not read (--read-all reads them)"
                          if not_read else "")
                       + (f", written to {download}" if download else "")))


@click.command("show")
@click.argument("ref")
@click.argument("what", metavar="DIGEST|FILE")
@click.option("--json", "json_mode", is_flag=True, help="Machine-readable output.")
@registry_options
def attestations_show(ref: str, what: str, json_mode: bool, **kw: Any) -> None:
    """Decode one attestation of the model at REF (a referrer digest or prefix, or a bundle
    file): claimed signer, subjects and predicate. Nothing is verified."""
    with errors_to_exit(json_mode):
        import json

        from modelseal.audit.evidence import load_bundle, show

        r, store = open_ref(ref, store_kwargs(kw))
        digest = store.resolve(r.reference)
        if digest is None:
            from modelseal.errors import NotFoundError

            raise NotFoundError(f"{r} does not exist")
        doc = show(load_bundle(store, digest, what))
        if json_mode:
            emit_json(doc)
            return
        c = console()
        signer = (f"{doc['identity']} ({doc['issuer']})" if doc["keyless"]
                  else f"key {doc['keyid']}")
        c.print(escape(f"{doc['predicateType']}\nsigned by (claimed): {signer}"), soft_wrap=True)
        for sub in doc["subject"]:
            c.print(escape(f"  subject {sub.get('name')}: {sub.get('digest')}"), soft_wrap=True)
        c.print(json.dumps(doc["predicate"], indent=2, sort_keys=True), soft_wrap=True,
                markup=False, highlight=False)
