"""The honest pipeline, recorded and pushed once per test module, for attacks that a
``MaliciousStore`` plays over it without ever changing it.

``build_world(tmp, host)`` runs ``pipeline_fixtures.honest_pipeline`` against ``host`` (an
``oci:`` image-layout directory: attacks then run in milliseconds). The approve step's
attestation is attached last, after the fallback referrers index was kept as it was
(``World.stale_index``). ``run`` verifies through a store with a layout and a policy, and
asserts what every verification must keep: no blob of the model was fetched to decide.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from malicious_store import MaliciousStore
from modelseal.attest.attachments import attach_bundle, subject_of
from modelseal.formats import ANN_BLOB
from modelseal.intoto_layout.authoring import load_template, new_layout
from modelseal.intoto_layout.model import key_dict, key_identity
from modelseal.oci import open_store
from modelseal.oci.referrers import fallback_tag
from modelseal.refs import Ref, parse_ref
from modelseal.verify.pipeline import verify_model
from modelseal.verify.policy import load_policy
from modelseal.verify.result import Refusal, VerificationResult
from paths import SIGSTORE
from pipeline_fixtures import (
    FUNCTIONARY,
    STEPS,
    Pipeline,
    honest_pipeline,
    publish,
    sign_doc,
    write_policy,
)

DSSE_BUNDLE = "a.dsse.staging-rekor-v2.txt.sigstore.json"


@dataclass
class World:
    """The honest pipeline, shared by a module's attacks (which never write to it)."""

    p: Pipeline
    statements: dict[str, dict[str, Any]]
    files: dict[str, str]  # model filepath -> sha256 hex
    keyless_ref: Ref  # a model holding the file the real keyless (staging) bundle is about
    keyless_digest: str
    stale_index: bytes  # the fallback referrers index before approve's attestation came

    @property
    def layers(self) -> set[str]:
        """The digests of the model's file blobs (the weights among them)."""
        return {"sha256:" + h for h in self.files.values()}


def statement_of(bundle: bytes) -> dict[str, Any]:
    payload = json.loads(bundle)["dsseEnvelope"]["payload"]
    st: dict[str, Any] = json.loads(base64.b64decode(payload))
    return st


def build_world(tmp: Path, host: str) -> World:
    """Record the honest pipeline and publish it (and a keyless model) to ``host``."""
    p = honest_pipeline(tmp, host, push_model=False)
    first = [b for s, b in p.bundles.items() if s != "approve"]
    p.digest = publish(p.store, p.ref, p.model_dir, first)
    stale, _, _ = p.store.get_manifest(fallback_tag(p.digest))
    attach_bundle(p.store, subject_of(p.store, p.digest), p.bundles["approve"])
    kdir = tmp / "keyless-model"
    kdir.mkdir()
    shutil.copy(SIGSTORE / "a.dsse.staging-rekor-v2.txt", kdir / "a.txt")
    kref = parse_ref(f"{host}/keyless/model:v1")
    kdigest = publish(open_store(kref), kref, kdir, [])
    files = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in p.model_dir.iterdir()}
    return World(p, {s: statement_of(b) for s, b in p.bundles.items()}, files, kref, kdigest,
                 stale)


# ---- helpers -----------------------------------------------------------------------------


def signer_of(w: World, name: str) -> Any:
    return w.p.functionaries[name].signer


def public_of(w: World, name: str) -> Any:
    return w.p.functionaries[name].public


def ident(w: World, name: str) -> str:
    """The key identity (key material) refusals and steps name ``name``'s key by."""
    return key_identity(key_dict(public_of(w, name)))


def layout_doc(w: World, **keys_by_step: list[Any]) -> dict[str, Any]:
    """The honest layout's document (unsigned), with step keys replaced where given."""
    keys = {s: [public_of(w, FUNCTIONARY[s])] for s in STEPS}
    keys.update({s.replace("_", "-"): v for s, v in keys_by_step.items()})
    names = {public_of(w, n).keyid: n for n in FUNCTIONARY.values()}
    return new_layout(load_template("ml-pipeline"),
                      [(s, k) for s, ks in keys.items() for k in ks], names=names)


def step_referrers(w: World, step: str) -> set[str]:
    """Referrer digests of the honest bundles of ``step``."""
    want = "sha256:" + hashlib.sha256(w.p.bundles[step]).hexdigest()
    return {d.digest for d in MaliciousStore(w.p.store).referrers(w.p.digest)
            if d.annotations.get(ANN_BLOB) == want}


def replace_step(w: World, step: str, bundle: bytes) -> tuple[MaliciousStore, str]:
    """A store where ``step``'s honest attestation is deleted and ``bundle`` attached."""
    store = MaliciousStore(w.p.store)
    for d in step_referrers(w, step):
        store.hide(d)
    return store, store.add(w.p.digest, bundle)


def run(w: World, tmp: Path, store: MaliciousStore | None = None,
        doc: dict[str, Any] | None = None, *, layout: bytes | None = None,
        ref: Ref | None = None, **policy: Any) -> VerificationResult:
    """Verify the shared model through ``store`` with the layout ``doc`` (signed by the
    owner, unlinted, as a hostile or careless owner's tool would; or the signed ``layout``)
    and the policy; and check that deciding fetched no blob of the model."""
    path = tmp / "layout.json"
    path.write_bytes(layout if layout is not None else
                     sign_doc(doc if doc is not None else layout_doc(w), w.p.owner.signer))
    pol = write_policy(tmp / "policy.yaml", str(path),
                       w.p.owner.key_path.with_suffix(".pub"), **policy)
    store = store or MaliciousStore(w.p.store)
    store.fetches.clear()  # what this verification reads
    result = verify_model(store, ref or w.p.ref, load_policy(pol))
    assert not store.blobs_fetched & w.layers, "verify fetched a blob of the model"
    return result


def find(r: VerificationResult, **where: Any) -> Refusal:
    """The refusal whose fields equal ``where``; fails listing all refusals otherwise."""
    assert not r.verified
    for x in r.refusals:
        if all(getattr(x, k) == v for k, v in where.items()):
            return x
    raise AssertionError(f"no refusal with {where}: {[x.to_dict() for x in r.refusals]}")
