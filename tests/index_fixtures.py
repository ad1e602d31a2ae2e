"""A small model world in an ``oci:`` directory for the index's tests: a base model trained on
dataset ``census`` and promoted to staging, a fine-tune of it trained on ``reviews`` and
evaluated on ``census``, and a model whose provenance claims ``census`` but is signed by a key
the layout does not know. Keys, layout and policy are real (securesystemslib, in-toto)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelseal.attest.attachments import attach_bundle, subject_of
from modelseal.attest.bundle import sign_statement
from modelseal.attest.statement import (
    evaluation_predicate,
    parse_threshold,
    provenance_predicate,
    resource_descriptor,
    statement,
)
from modelseal.formats import LINK_PREDICATE, SLSA_PROVENANCE_PREDICATE, TEST_RESULT_PREDICATE
from modelseal.intoto_layout.authoring import load_template, new_layout, sign_layout
from modelseal.lifecycle.layout import add_lifecycle_rules
from modelseal.modelpack import ModelMetadata
from modelseal.oci import open_store
from modelseal.refs import parse_ref
from modelseal.transfer import push
from pipeline_fixtures import FUNCTIONARY, STEPS, make_functionaries, write_policy

CENSUS = "sha256:" + "c3" * 32
REVIEWS = "sha256:" + "7e" * 32
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class World:
    tmp: Path
    oci: Path
    policy: Path
    keys: dict[str, Any]
    digests: dict[str, str] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return f"oci:{self.oci}"

    def ref(self, tag: str) -> str:
        return f"oci:{self.oci}:{tag}"

    def attach(self, tag: str, st: dict[str, Any], signer: str) -> str:
        store = open_store(parse_ref(self.ref(tag)))
        bundle = sign_statement(st, self.keys[signer].signer)
        return attach_bundle(store, subject_of(store, self.digests[tag]), bundle).descriptor.digest


def push_model(oci: Path, tmp: Path, tag: str, name: str, payload: bytes) -> str:
    d = tmp / f"model-{tag}"
    d.mkdir(parents=True)
    (d / "weights.bin").write_bytes(payload)
    (d / "config.json").write_text('{"hidden": 4}')
    ref = parse_ref(f"oci:{oci}:{tag}")
    return push(d, open_store(ref), ref, ModelMetadata({"name": name, "version": tag})).digest


def provenance(digest: str, datasets: list[dict[str, Any]], base: str | None = None
               ) -> dict[str, Any]:
    pred = provenance_predicate(
        datasets=datasets, base_models=[resource_descriptor("base", base)] if base else [],
        code_repository="https://git.example/ml/train", code_commit=COMMIT,
        builder_id="https://ci.example/runner", finished_on=datetime.now(UTC))
    return statement([("model", digest)], SLSA_PROVENANCE_PREDICATE, pred)


def evaluation(digest: str, dataset: dict[str, Any]) -> dict[str, Any]:
    pred = evaluation_predicate({"accuracy": 0.93}, [parse_threshold("accuracy>=0.9")],
                                configuration=[resource_descriptor("metrics.json",
                                                                   "ab" * 32), dataset])
    return statement([("model", digest)], TEST_RESULT_PREDICATE, pred)


def _keys_and_policy(tmp: Path) -> World:
    names = [*FUNCTIONARY.values(), "owner", "rm1", "mallory"]
    fs = make_functionaries(tmp, names)
    doc = new_layout(load_template("ml-pipeline"),
                     [(s, fs[FUNCTIONARY[s]].public) for s in STEPS],
                     names={fs[n].public.keyid: n for n in FUNCTIONARY.values()})
    doc["modelseal"]["step_predicates"] = {
        "train": [LINK_PREDICATE, SLSA_PROVENANCE_PREDICATE],
        "evaluate": [LINK_PREDICATE, TEST_RESULT_PREDICATE]}
    add_lifecycle_rules(doc, {"promote:staging": ([fs["rm1"].public], 1, [])})
    layout = tmp / "root.layout.json"
    layout.write_text(json.dumps(sign_layout(doc, fs["owner"].signer)))
    policy = write_policy(tmp / "policy.yaml", str(layout),
                          fs["owner"].key_path.with_suffix(".pub"))
    return World(tmp, tmp / "models", policy, fs)


def build_world(tmp: Path) -> World:
    w = _keys_and_policy(tmp)
    oci = w.oci
    w.digests["base-v1"] = push_model(oci, tmp, "base-v1", "base", b"base weights")
    w.digests["ft-v1"] = push_model(oci, tmp, "ft-v1", "finetune", b"fine-tuned weights")
    w.digests["evil-v1"] = push_model(oci, tmp, "evil-v1", "evil", b"evil weights")
    census = resource_descriptor("census", CENSUS, uri="https://data.example/census")
    reviews = resource_descriptor("reviews", REVIEWS)
    w.attach("base-v1", provenance(w.digests["base-v1"], [census]), "trainer")
    w.attach("ft-v1", provenance(w.digests["ft-v1"], [reviews], base=w.digests["base-v1"]),
             "trainer")
    w.attach("ft-v1", evaluation(w.digests["ft-v1"], census), "evaluator")
    w.attach("evil-v1", provenance(w.digests["evil-v1"], [census]), "mallory")
    promote_staging(w, "base-v1")
    return w


def promote_staging(w: World, tag: str) -> None:
    from modelseal.index.crawler import PolicyContext
    from modelseal.lifecycle.service import transition

    ctx = PolicyContext.load(w.policy)
    ref = parse_ref(w.ref(tag))
    transition(open_store(ref), ref, action="promote", stage="staging",
               signer=w.keys["rm1"].signer, layout=ctx.layout)


def build_world_keys(tmp: Path) -> tuple[dict[str, Any], Path]:
    """Keys and a policy like ``build_world``'s, without models (for the benchmark)."""
    w = _keys_and_policy(tmp)
    return w.keys, w.policy
