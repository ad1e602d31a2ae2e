"""The ML-BOM flow, as ``modelseal bom`` runs it: read and check every input, build and
validate the BOM (of a model directory, or of a pushed model from its registry evidence),
then sign it, write the signed bundle and attach it.

Every input is read and checked, and the BOM validated, before anything is signed, written
or attached: a bad metrics file never leaves a signed BOM behind.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelseal.bom.inputs import DatasetInfo, Metric, StepRef
from modelseal.errors import InputError

if TYPE_CHECKING:
    from securesystemslib.signer import Signer

    from modelseal.oci.store import Store
    from modelseal.refs import Ref


@dataclass(frozen=True)
class BomInputs:
    """What a BOM is built from beside the model itself (paths, read by :func:`load_inputs`).

    ``steps`` are for a model directory (a pushed model's steps come from its attestations);
    ``scan_dir`` is for a pushed model (a local copy scanned instead of reading its attached
    safety attestation); ``scan=False`` records no safety result."""

    name: str | None = None
    version: str | None = None
    model_card: Path | None = None
    datasets: Sequence[tuple[Path, str | None]] = ()
    metrics: Path | None = None
    environment: Path | None = None
    environment_files: bool = False
    steps: Sequence[StepRef] = ()
    scan: bool = True
    scan_dir: Path | None = None
    spec_version: str = "1.6"


@dataclass(frozen=True)
class LoadedInputs:
    """:class:`BomInputs` read and checked."""

    card: dict[str, Any] | None
    datasets: list[DatasetInfo]
    metrics: list[Metric] | None


@dataclass
class BomResult:
    """A built (validated) BOM, where its parts came from, and what was signed and attached.

    ``ref``/``digest`` are set for a pushed model; ``signed`` is the bundle file written (None
    without a signer); ``attached`` maps ``bom`` (the plain CycloneDX referrer) and
    ``attestation`` (the signed one, None without a signer) to referrer digests."""

    document: dict[str, Any]
    spec_version: str
    ref: Ref | None = None
    digest: str | None = None
    steps: list[str] = field(default_factory=list)
    safety_source: str | None = None
    metrics_source: str | None = None
    signed: Path | None = None
    bundle: bytes | None = None
    attached: dict[str, str | None] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """What ``modelseal bom REF --json`` prints."""
        return {"ref": str(self.ref) if self.ref else None, "digest": self.digest,
                "specVersion": self.spec_version,
                "components": len(self.document.get("components", [])),
                "steps": self.steps, "safety": self.safety_source,
                "metrics": self.metrics_source,
                "signed": str(self.signed) if self.signed else None,
                "attached": self.attached}


def load_inputs(inputs: BomInputs) -> LoadedInputs:
    """Read and check every input of ``inputs`` (InputError naming the bad one)."""
    from modelseal.bom.environment import site_packages_of
    from modelseal.bom.inputs import dataset_from_path, load_metrics, load_model_card

    card = load_model_card(inputs.model_card) if inputs.model_card else None
    ds = [dataset_from_path(p, n) for p, n in inputs.datasets]
    mets = load_metrics(inputs.metrics) if inputs.metrics else None
    if inputs.environment is not None:
        site_packages_of(inputs.environment)
    if inputs.scan_dir is not None and not inputs.scan_dir.is_dir():
        raise InputError(f"--scan {inputs.scan_dir}: not a directory")
    return LoadedInputs(card, ds, mets)


def bom_of_directory(model_dir: str | os.PathLike[str], inputs: BomInputs, *,
                     signer: Signer | None = None,
                     attestations_dir: str | os.PathLike[str] | None = None) -> BomResult:
    """The ML-BOM of the model in ``model_dir`` (its files scanned for safety unless
    ``inputs.scan`` is False); with a ``signer``, signed about the model's files and written
    by the naming rule (``bom.<keyid8>.intoto.sigstore.json``)."""
    from modelseal.bom.build import build_bom
    from modelseal.bom.inputs import model_info_from_dir
    from modelseal.errors import UsageError

    root = Path(model_dir)
    if not root.is_dir():
        raise InputError(f"{model_dir} is not a model directory")
    if inputs.scan_dir is not None:
        raise UsageError("--scan DIR is for a REF: a model directory is scanned itself")
    loaded = load_inputs(inputs)
    name = inputs.name or (loaded.card or {}).get("name")
    info = model_info_from_dir(root, name or root.resolve().name, inputs.version)
    report = None
    if inputs.scan:
        from modelseal.safety import scan_model

        report = scan_model(root)
    doc = build_bom(info, model_card=loaded.card, datasets=loaded.datasets,
                    metrics=loaded.metrics, environment=inputs.environment,
                    steps=list(inputs.steps), safety=report, spec_version=inputs.spec_version,
                    environment_files=inputs.environment_files)
    out = BomResult(doc, inputs.spec_version, steps=[s.name for s in inputs.steps])
    if signer is not None:
        from modelseal.attest.output import sign_and_write
        from modelseal.bom.remote import bom_statement

        st = bom_statement(doc, [(f.path, f.sha256) for f in info.files])
        signed = sign_and_write(st, signer, "bom", directory=attestations_dir)
        out.signed, out.bundle = signed.path, signed.bundle
    return out


def publish_bom(store: Store, ref: Ref, inputs: BomInputs, *, signer: Signer | None = None,
                attach: bool = False,
                attestations_dir: str | os.PathLike[str] | None = None) -> BomResult:
    """The ML-BOM of the pushed model at ``ref`` (files from its manifest, steps, safety and
    metrics from its attestations: no weights are read); with a ``signer``, signed about the
    model's files and manifest and written by the naming rule; with ``attach``, attached to
    the model twice (signed, when there is a signer, and as a plain CycloneDX referrer)."""
    from modelseal.bom.remote import attach_bom, bom_for_ref, bom_statement, bom_subjects
    from modelseal.errors import UsageError

    if inputs.steps:
        raise UsageError("--step is for a directory; a REF's steps come from the "
                         "attestations attached to it")
    if inputs.scan_dir is not None and not inputs.scan:
        raise UsageError("--scan DIR and --no-scan contradict each other")
    loaded = load_inputs(inputs)
    built = bom_for_ref(store, ref, model_card=loaded.card, datasets=loaded.datasets,
                        metrics=loaded.metrics, environment=inputs.environment,
                        scan_dir=inputs.scan_dir, use_attached_safety=inputs.scan,
                        name=inputs.name or (loaded.card or {}).get("name"),
                        version=inputs.version, spec_version=inputs.spec_version,
                        environment_files=inputs.environment_files)
    doc = built.document
    out = BomResult(doc, inputs.spec_version, ref=built.ref, digest=built.manifest.digest,
                    steps=[s.name for s in built.steps], safety_source=built.safety_source,
                    metrics_source=built.metrics_source)
    if signer is not None:
        from modelseal.attest.output import sign_and_write

        st = bom_statement(doc, bom_subjects(built.manifest, built.ref))
        signed = sign_and_write(st, signer, "bom", directory=attestations_dir)
        out.signed, out.bundle = signed.path, signed.bundle
    if attach:
        from modelseal.attest.attachments import subject_of

        subject = subject_of(store, built.manifest.digest)
        done = attach_bom(store, subject, doc, out.bundle)
        out.attached = {"bom": done.plain.descriptor.digest,
                        "attestation": done.signed.descriptor.digest if done.signed else None}
    return out
