"""Offline audit bundles: one tar file that verifies with no network, years later.

A bundle is an OCI image-layout archive (``oci-archive:``, readable by skopeo, oras and
modelseal) holding the model manifest, its config, every referrer (recursively), and, without
``with_weights``, none of the weight blobs: verification never reads weights, because the
layout's final products are the (filepath, digest) pairs of the manifest, which is in the
bundle. With a policy, the bundle also carries, beside the layout, under ``modelseal/``:

- ``policy.yaml``: the policy, rewritten so its paths point into the bundle;
- ``layout.json``: the signed in-toto layout the policy names (fetched once if it was pinned
  in a registry);
- ``keys/``: the layout owners' public keys; ``trusted_root.json``: the Sigstore trusted root;
- ``tsa/``: the TSA certificates the policy trusts (``trusted_tsa``), when it names any;
- ``bundle.json``: what was exported (reference, digest, tag, time, omitted blobs) and the
  sha256 of each file above.

``verify_bundle_file`` opens the archive where it is (no extraction of the layout), takes the
policy from the bundle unless one is given, and runs the same verifier as ``modelseal verify``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from modelseal._util.time import created_time, rfc3339
from modelseal.errors import InputError, NotFoundError, UsageError
from modelseal.formats import AUDIT_BUNDLE_FORMAT, MEDIA_TYPES
from modelseal.oci.archive import ArchiveStore
from modelseal.oci.store import Descriptor, Store
from modelseal.refs import Ref
from modelseal.transfer import Progress
from modelseal.verify.result import VerificationResult

PREFIX = "modelseal/"
MANIFEST_FILE = PREFIX + "bundle.json"
POLICY_FILE = PREFIX + "policy.yaml"
WEIGHT_MEDIA_TYPES = (MEDIA_TYPES["weight"],)


def is_weight(d: Descriptor) -> bool:
    """A weight layer (left out of bundles without ``--with-weights``)."""
    return d.media_type in WEIGHT_MEDIA_TYPES or (
        ".weight." in d.media_type and ".weight.config." not in d.media_type)


@dataclass
class ExportResult:
    """What went into a bundle (``--json``)."""

    path: str
    ref: str
    digest: str
    tag: str
    referrers: int
    blobs: int
    bytes_total: int
    omitted_blobs: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # extra file -> sha256

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "ref": self.ref, "digest": self.digest, "tag": self.tag,
                "referrers": self.referrers, "blobs": self.blobs, "bytes": self.bytes_total,
                "omittedBlobs": self.omitted_blobs, "files": self.files}


def _policy_files(policy_path: Path, registry_options: dict[str, Any] | None
                  ) -> dict[str, bytes]:
    """The policy rewritten to point into the bundle, and every file it uses."""
    from modelseal.attest.bundle import PRODUCTION_TUF_URL, STAGING_TUF_URL
    from modelseal.verify.pipeline import load_layout_bytes
    from modelseal.verify.policy import load_policy

    policy = load_policy(policy_path)  # checks it first: a bad policy is exit 2, not a bundle
    try:
        doc = yaml.safe_load(policy_path.read_text())
    except (OSError, yaml.YAMLError) as e:  # load_policy read it a moment ago
        raise InputError(f"cannot read {policy_path}: {e}") from e
    base = policy_path.resolve().parent
    files: dict[str, bytes] = {}
    layout_bytes, _ = load_layout_bytes(policy, registry_options)
    files[PREFIX + "layout.json"] = layout_bytes
    doc["layout"] = "layout.json"
    keys = doc.get("layout_keys")
    new_keys = []
    for i, spec in enumerate(keys if isinstance(keys, list) else [keys]):
        p = Path(str(spec))
        p = p if p.is_absolute() else base / p
        if not p.is_file():
            raise UsageError(f"policy {policy_path}: layout key {spec} is not a file; a bundle "
                             "can carry only public key files")
        name = f"keys/{i}-{p.name}"
        files[PREFIX + name] = p.read_bytes()
        new_keys.append(name)
    doc["layout_keys"] = new_keys
    # the TSA certificates whose timestamps the policy trusts (lifecycle ages and order):
    # without them the bundle's own policy names files that are not there
    tsa = doc.get("trusted_tsa")
    if tsa:
        new_tsa = []
        for i, spec in enumerate(tsa if isinstance(tsa, list) else [tsa]):
            p = Path(str(spec))
            p = p if p.is_absolute() else base / p
            try:
                data = p.read_bytes()
            except OSError as e:
                raise UsageError(f"policy {policy_path}: trusted_tsa {spec} cannot be read: "
                                 f"{e.strerror or e}") from e
            name = f"tsa/{i}-{p.name}"
            files[PREFIX + name] = data
            new_tsa.append(name)
        doc["trusted_tsa"] = new_tsa
    root = str(doc.get("trusted_root") or "production")
    if root in ("production", "staging"):
        from importlib import resources
        from urllib.parse import quote

        url = PRODUCTION_TUF_URL if root == "production" else STAGING_TUF_URL
        data = (resources.files("sigstore._store") / quote(url, safe="")
                / "trusted_root.json").read_bytes()
    else:
        rp = Path(root) if Path(root).is_absolute() else base / root
        data = rp.read_bytes()
    files[PREFIX + "trusted_root.json"] = data
    doc["trusted_root"] = "trusted_root.json"
    files[POLICY_FILE] = yaml.safe_dump(doc, sort_keys=False).encode()
    return files


def export_bundle(store: Store, ref: Ref, out: str | Path, *, policy: str | Path | None = None,
                  with_weights: bool = False, workers: int = 8,
                  progress: Progress | None = None,
                  registry_options: dict[str, Any] | None = None) -> ExportResult:
    """Write the bundle for the model at ``ref`` to ``out`` (atomically)."""
    from modelseal.copy import copy

    out = Path(out)
    if out.exists() and not out.is_file():
        raise InputError(f"{out} exists and is not a file")
    extras = _policy_files(Path(policy), registry_options) if policy else {}
    tag = ref.tag or "latest"
    # A bundle is written whole, never merged into an older file of that name: build it
    # under a temporary name, then rename it over ``out`` (which survives a failed export).
    partial = out.with_name(f".{out.name}.partial")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    archive = ArchiveStore(partial, writable=True)
    try:
        a_ref = Ref("oci-archive", str(out), tag=tag)
        res = copy(store, ref, archive, a_ref, workers=workers, progress=progress,
                   omit_layer=None if with_weights else is_weight)
        files = {name: hashlib.sha256(data).hexdigest() for name, data in extras.items()}
        meta = {"format": AUDIT_BUNDLE_FORMAT, "ref": str(ref.with_digest(res.digest)),
                "digest": res.digest, "tag": tag, "created": rfc3339(created_time()),
                "withWeights": with_weights, "omittedBlobs": res.blobs_omitted,
                "files": files}
        for name, data in extras.items():
            archive.add_extra(name, data)
        archive.add_extra(MANIFEST_FILE, json.dumps(meta, indent=2, sort_keys=True).encode())
        archive.commit()
        os.replace(partial, out)
    finally:
        archive.close()
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return ExportResult(str(out), str(ref.with_digest(res.digest)), res.digest, tag,
                        len(res.referrers), res.blobs, res.bytes_total, res.blobs_omitted,
                        files)


def bundle_info(store: ArchiveStore) -> dict[str, Any]:
    """The bundle's ``modelseal/bundle.json``; for a plain OCI archive, what can be read."""
    try:
        meta = json.loads(store.read_extra(MANIFEST_FILE, max_size=16 << 20))
    except NotFoundError:
        tags = [t for t in store.list_tags() if not t.startswith("sha256-")]
        if len(tags) != 1:
            raise InputError(f"{store.describe()} is not a modelseal bundle and holds "
                             f"{len(tags)} models (tags {tags}): name one with "
                             "oci-archive:FILE:TAG") from None
        return {"tag": tags[0], "files": {}}
    except ValueError as e:
        raise InputError(f"{MANIFEST_FILE} in {store.describe()} is not JSON: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != AUDIT_BUNDLE_FORMAT:
        raise InputError(f"{store.describe()}: {MANIFEST_FILE} is not a {AUDIT_BUNDLE_FORMAT}")
    return meta


def verify_bundle_file(path: str | Path, *, policy: str | Path | None = None,
                       now: datetime | None = None) -> VerificationResult:
    """Verify the model in a bundle with no network: the bundle's policy unless ``policy``."""
    from modelseal.verify.pipeline import verify_model
    from modelseal.verify.policy import load_policy

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such bundle file")
    store = ArchiveStore(path)
    meta = bundle_info(store)
    tag = str(meta.get("tag") or "latest")
    digest = meta.get("digest")
    ref = Ref("oci-archive", str(path), tag=tag,
              digest=digest if isinstance(digest, str) else None)
    if policy is not None:
        return verify_model(store, ref, load_policy(policy), now=now)
    if POLICY_FILE not in store.extra_files():
        raise UsageError(f"{path} carries no policy: give one with --policy",
                         hint="export it with `modelseal bundle export REF --policy P`")
    scratch = Path(tempfile.mkdtemp(prefix="modelseal-bundle-"))
    try:
        recorded = meta.get("files") or {}
        for name in store.extra_files():
            if not name.startswith(PREFIX):
                continue
            data = store.read_extra(name)
            want = recorded.get(name)
            if name != MANIFEST_FILE and want != hashlib.sha256(data).hexdigest():
                raise InputError(f"{name} in {path} does not match the bundle's record of it "
                                 "(altered or added after export): refused")
            dest = scratch.joinpath(*name.split("/"))
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        for name in recorded:
            if name not in store.extra_files():
                raise InputError(f"{path} lacks {name}, which its record lists: refused")
        return verify_model(store, ref, load_policy(scratch / POLICY_FILE), now=now)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
