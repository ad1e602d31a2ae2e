"""An honest ML pipeline, recorded for real, for the verifier's tests.

Five functionaries with their own keys run the five steps of ``layouts/ml-pipeline.json`` in a
workspace (``raw/`` -> ``data/`` -> ``model/`` -> ``eval/``), each step recorded with
``attest.steps.record_step`` (real commands, real hashing) and signed with ``sign_statement``;
the package step records the model files relative to the model root, as ``push --signer``
does. The model is pushed with ``transfer.push``, the bundles attached as referrers, the
layout signed by its owner, and a policy written next to it. Attack tests start from this and
change one thing.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from modelseal.attest.attachments import attach_bundle, subject_of
from modelseal.attest.bundle import sign_statement
from modelseal.attest.signers import keygen, load_public_key, load_signer
from modelseal.attest.steps import record_step
from modelseal.intoto_layout.authoring import load_template, new_layout, sign_layout
from modelseal.modelpack import ModelMetadata
from modelseal.oci import open_store
from modelseal.oci.store import Store
from modelseal.refs import Ref, parse_ref
from modelseal.transfer import push

STEPS = ("prepare-data", "train", "evaluate", "approve", "package")
FUNCTIONARY = {"prepare-data": "data-eng", "train": "trainer", "evaluate": "evaluator",
               "approve": "approver", "package": "release"}
PY = sys.executable

PREPARE = ("import pathlib; p = pathlib.Path('data'); p.mkdir(exist_ok=True); "
           "rows = pathlib.Path('raw/rows.csv').read_text().splitlines(); "
           "(p / 'train.csv').write_text('\\n'.join(rows[:6])); "
           "(p / 'test.csv').write_text('\\n'.join(rows[6:]))")
TRAIN = ("import pathlib, hashlib; m = pathlib.Path('model'); m.mkdir(exist_ok=True); "
         "d = pathlib.Path('data/train.csv').read_bytes(); "
         "(m / 'weights.bin').write_bytes(hashlib.sha256(d).digest() * 64); "
         "(m / 'config.json').write_text('{\"hidden\": 8}')")
EVALUATE = ("import pathlib, json; e = pathlib.Path('eval'); e.mkdir(exist_ok=True); "
            "(e / 'report.json').write_text(json.dumps({'accuracy': 0.93}))")


@dataclass
class Functionary:
    name: str
    key_path: Path

    @property
    def signer(self) -> Any:
        return load_signer(str(self.key_path.with_suffix(".key")))

    @property
    def public(self) -> Any:
        return load_public_key(self.key_path.with_suffix(".pub"))


def make_functionaries(tmp: Path, names: Sequence[str]) -> dict[str, Functionary]:
    keys = tmp / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    out = {}
    for n in names:
        if not (keys / f"{n}.key").exists():
            keygen(keys / n)
        out[n] = Functionary(n, keys / n)
    return out


def make_workspace(tmp: Path) -> Path:
    ws = tmp / "workspace"
    (ws / "raw").mkdir(parents=True)
    (ws / "code").mkdir()
    (ws / "raw" / "rows.csv").write_text("\n".join(f"{i},{i * i}" for i in range(10)))
    (ws / "code" / "train.py").write_text("# training code\n")
    return ws


def record_statements(ws: Path) -> dict[str, dict[str, Any]]:
    """Run the five steps for real; step name -> link Statement (unsigned)."""
    model = ws / "model"
    recs = {
        "prepare-data": record_step("prepare-data", [PY, "-c", PREPARE], ["raw"], ["data"],
                                    base_dir=ws),
        "train": record_step("train", [PY, "-c", TRAIN], ["data", "code"], ["model"],
                             base_dir=ws),
        "evaluate": record_step("evaluate", [PY, "-c", EVALUATE], ["model", "data", "code"],
                                ["eval"], base_dir=ws),
        "approve": record_step("approve", ["true"], ["model", "eval"], [], base_dir=ws),
    }
    recs["package"] = record_step("package", ["true"], ["."], ["."], base_dir=model)
    for step, rec in recs.items():
        assert rec.returncode == 0, step
    return {step: rec.statement for step, rec in recs.items()}


def record_pipeline(ws: Path, signers: Mapping[str, Any]) -> dict[str, bytes]:
    """Run and sign the five steps; step name -> bundle bytes."""
    return {step: sign_statement(st, signers[step])
            for step, st in record_statements(ws).items()}


def build_layout(functionaries: Mapping[str, Sequence[Any]], owner: Any, *,
                 template: str | Mapping[str, Any] = "ml-pipeline",
                 expires: datetime | None = None, thresholds: Mapping[str, int] | None = None,
                 edit: Any = None, names: Mapping[str, str] | None = None) -> bytes:
    """A signed layout: step -> public keys (securesystemslib Keys); ``names``: keyid ->
    functionary name."""
    tpl = load_template(template) if isinstance(template, str) else dict(template)
    if edit is not None:
        edit(tpl)
    pairs = [(step, k) for step, keys in functionaries.items() for k in keys]
    doc = new_layout(tpl, pairs, thresholds=thresholds, expires=expires, names=names)
    return json.dumps(sign_layout(doc, owner)).encode()


def sign_doc(doc: Mapping[str, Any], owner: Any) -> bytes:
    """Sign a layout document as a careless owner's own tool would: no lint (an attacker's
    layout, or one signed by another tool, reaches the verifier without ``layout check``)."""
    from securesystemslib.dsse import Envelope

    env = Envelope(payload=json.dumps(doc, sort_keys=True, separators=(",", ":")).encode(),
                   payload_type="application/vnd.in-toto+json", signatures={})
    env.sign(owner)
    return json.dumps(env.to_dict()).encode()


def write_policy(path: Path, layout: str, owner_pub: Sequence[Path] | Path,
                 **extra: Any) -> Path:
    keys = [owner_pub] if isinstance(owner_pub, Path) else list(owner_pub)
    doc = {"layout": layout, "layout_keys": [str(k) for k in keys], **extra}
    path.write_text(yaml.safe_dump(doc))
    return path


def publish(store: Store, ref: Ref, model_dir: Path, bundles: Sequence[bytes]) -> str:
    """Push the model and attach the bundles; the manifest digest."""
    res = push(model_dir, store, ref, ModelMetadata({"name": "tiny", "version": "1.0"}))
    subject = subject_of(store, res.digest)
    for b in bundles:
        attach_bundle(store, subject, b)
    return res.digest


@dataclass
class Pipeline:
    tmp: Path
    workspace: Path
    functionaries: dict[str, Functionary]
    owner: Functionary
    bundles: dict[str, bytes]
    layout_path: Path
    policy_path: Path
    registry_host: str
    ref: Ref
    store: Store
    digest: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def model_dir(self) -> Path:
        return self.workspace / "model"

    def step_keys(self) -> dict[str, list[Any]]:
        return {s: [self.functionaries[FUNCTIONARY[s]].public] for s in STEPS}

    def ref_text(self, tag: str | None = None) -> str:
        return f"{self.registry_host}/{self.ref.repository}:{tag or self.ref.tag}"

    def resign_layout(self, layout: bytes) -> None:
        self.layout_path.write_bytes(layout)

    def policy(self, **extra: Any) -> Path:
        """Rewrite the policy with extra requirements; its path."""
        layout = str(extra.pop("layout", self.layout_path))
        return write_policy(self.policy_path, layout, self.owner.key_path.with_suffix(".pub"),
                            **extra)


def honest_pipeline(tmp: Path, registry_host: str, *, repo: str = "models/tiny",
                    tag: str = "v1", push_model: bool = True) -> Pipeline:
    """The whole honest pipeline on a registry; verifying it must pass."""
    names = [*FUNCTIONARY.values(), "owner"]
    fs = make_functionaries(tmp, names)
    ws = make_workspace(tmp)
    signers = {s: fs[FUNCTIONARY[s]].signer for s in STEPS}
    bundles = record_pipeline(ws, signers)
    owner = fs["owner"]
    layout = build_layout({s: [fs[FUNCTIONARY[s]].public] for s in STEPS}, owner.signer,
                          names={fs[n].public.keyid: n for n in FUNCTIONARY.values()})
    layout_path = tmp / "root.layout.json"
    layout_path.write_bytes(layout)
    policy_path = write_policy(tmp / "policy.yaml", str(layout_path),
                               owner.key_path.with_suffix(".pub"))
    ref = parse_ref(f"{registry_host}/{repo}:{tag}")
    store = open_store(ref)
    digest = ""
    if push_model:
        digest = publish(store, ref, ws / "model", list(bundles.values()))
    return Pipeline(tmp, ws, fs, owner, bundles, layout_path, policy_path, registry_host, ref,
                    store, digest)
