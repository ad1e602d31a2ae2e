"""Fuzzing every parser of outside input (Hypothesis): whatever the bytes or values, a parser
returns a typed object or raises a ModelsealError (a clear message and a documented exit
code), never another exception.

Each test mutates a valid document (a field replaced by any JSON value, dropped, or the bytes
cut or flipped) as well as throwing arbitrary values at it, so the fuzzer reaches the checks
deep inside the document and not only the first type test.
"""

from __future__ import annotations

import base64
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelseal._util import json as bounded_json
from modelseal._util.time import parse_time
from modelseal.attest.bundle import parse_bundle
from modelseal.errors import ModelsealError
from modelseal.modelpack import ModelMetadata, parse_model_manifest
from modelseal.oci.store import Descriptor
from modelseal.verify.policy import compile_policy

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
HEX = "b" * 64

json_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                | st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20)


def _mutate(doc: Any, path: list[Any], value: Any, drop: bool) -> Any:
    """``doc`` with the node at ``path`` replaced by ``value`` (or removed)."""
    if not path:
        return value
    doc = json.loads(json.dumps(doc))
    node = doc
    for key in path[:-1]:
        node = node[key]
    if drop and isinstance(node, dict):
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return doc


def _paths(doc: Any, prefix: list[Any] | None = None) -> list[list[Any]]:
    prefix = prefix or []
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, [*prefix, k])
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, [*prefix, i])
    return out


def mutations(valid: Any) -> st.SearchStrategy[Any]:
    paths = _paths(valid)
    return st.builds(lambda i, v, d: _mutate(valid, paths[i], v, d),
                     st.integers(0, len(paths) - 1), json_values, st.booleans())


def byte_mutations(valid: bytes) -> st.SearchStrategy[bytes]:
    """The valid bytes cut short, with a byte changed, or with junk spliced in."""
    n = len(valid)
    return st.one_of(
        st.integers(0, n).map(lambda i: valid[:i]),
        st.tuples(st.integers(0, n - 1), st.integers(0, 255)).map(
            lambda t: valid[:t[0]] + bytes([t[1]]) + valid[t[0] + 1:]),
        st.tuples(st.integers(0, n), st.binary(max_size=16)).map(
            lambda t: valid[:t[0]] + t[1] + valid[t[0]:]),
    )


def _only_modelseal_errors(fn: Any, *args: Any, **kw: Any) -> None:
    with contextlib.suppress(ModelsealError):  # any other exception fails the test
        fn(*args, **kw)


# ---------------------------------------------------------------------------------------------
# the JSON reader

@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_fuzz_json_reader(data: bytes) -> None:
    _only_modelseal_errors(bounded_json.loads, data, what="doc")


@FUZZ
@given(st.integers(0, 200), st.sampled_from("[{"), st.text(alphabet='[]{}",:1a\\', max_size=50))
def test_fuzz_json_reader_nesting(depth: int, opener: str, tail: str) -> None:
    closer = "]" if opener == "[" else "}"
    inner = '"k":1' if opener == "{" else "1"
    doc = (opener + ('"k":' if opener == "{" else "")) * depth + inner + closer * depth + tail
    _only_modelseal_errors(bounded_json.loads, doc, what="doc")


# ---------------------------------------------------------------------------------------------
# descriptors and manifests

VALID_DESCRIPTOR = {"mediaType": "application/vnd.cncf.model.weight.v1.raw",
                    "digest": f"sha256:{HEX}", "size": 5, "artifactType": "a/b",
                    "annotations": {"org.opencontainers.image.title": "w.bin"}}
VALID_MANIFEST = {
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "artifactType": "application/vnd.cncf.model.manifest.v1+json",
    "config": {"mediaType": "application/vnd.cncf.model.config.v1+json",
               "digest": f"sha256:{HEX}", "size": 10},
    "layers": [{"mediaType": "application/vnd.cncf.model.weight.v1.raw",
                "digest": f"sha256:{HEX}", "size": 5,
                "annotations": {"org.opencontainers.image.title": "w.bin",
                                "org.cncf.model.filepath": "d/w.bin"}}],
    "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
}


@FUZZ
@given(mutations(VALID_DESCRIPTOR) | json_values)
def test_fuzz_descriptor(doc: Any) -> None:
    _only_modelseal_errors(Descriptor.from_dict, doc)


@FUZZ
@given(mutations(VALID_MANIFEST).map(lambda d: json.dumps(d).encode())
       | byte_mutations(json.dumps(VALID_MANIFEST).encode()))
def test_fuzz_model_manifest(raw: bytes) -> None:
    _only_modelseal_errors(parse_model_manifest, raw, f"sha256:{HEX}")


# ---------------------------------------------------------------------------------------------
# bundles

STATEMENT = {"_type": "https://in-toto.io/Statement/v1",
             "subject": [{"name": "m", "digest": {"sha256": HEX}}],
             "predicateType": "https://in-toto.io/attestation/link/v0.3",
             "predicate": {"name": "train"}}
VALID_BUNDLE = {
    "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
    "verificationMaterial": {"publicKey": {"hint": "k"}, "tlogEntries": []},
    "dsseEnvelope": {"payload": base64.b64encode(json.dumps(STATEMENT).encode()).decode(),
                     "payloadType": "application/vnd.in-toto+json",
                     "signatures": [{"keyid": "k", "sig": "MEUCIQ=="}]},
}


def _read_bundle(raw: bytes) -> None:
    pb = parse_bundle(raw)
    # what a verifier reads before any signature is checked must not crash either
    _ = (pb.statement, pb.predicate_type, pb.signer_hint, pb.keyless)


@FUZZ
@given(mutations(VALID_BUNDLE).map(lambda d: json.dumps(d).encode())
       | byte_mutations(json.dumps(VALID_BUNDLE).encode()))
def test_fuzz_bundle(raw: bytes) -> None:
    _only_modelseal_errors(_read_bundle, raw)


@FUZZ
@given(mutations(STATEMENT))
def test_fuzz_bundle_payload(statement: Any) -> None:
    doc = json.loads(json.dumps(VALID_BUNDLE))
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    _only_modelseal_errors(_read_bundle, json.dumps(doc).encode())


# ---------------------------------------------------------------------------------------------
# metadata and policies

VALID_METADATA = {"descriptor": {"name": "m", "version": "1"},
                  "config": {"architecture": "transformer"}, "annotations": {"a": "b"}}


@FUZZ
@given(mutations(VALID_METADATA) | json_values)
def test_fuzz_metadata_mapping(doc: Any) -> None:
    if isinstance(doc, dict):
        _only_modelseal_errors(ModelMetadata.from_mapping, doc)


@FUZZ
@given(st.binary(max_size=200) | mutations(VALID_METADATA).map(
    lambda d: json.dumps(d).encode()))
def test_fuzz_metadata_file(tmp_path: Path, raw: bytes) -> None:
    f = tmp_path / "meta.yaml"
    f.write_bytes(raw)
    _only_modelseal_errors(ModelMetadata.load, f)


VALID_POLICY = {"layout": "layout.json", "layout_keys": ["owner.pub"],
                "trusted_root": "production", "final_step": "package",
                "required_predicates": ["https://cyclonedx.org/bom",
                                        {"type": "https://slsa.dev/provenance/v1",
                                         "step": "train"}],
                "distinct_signers": [["train", "approve"]], "max_attestation_age": "90d",
                "required_stage": {"stage": "production", "step": "approve"},
                "model_safety": {"include_suspicious": True}}


class _Key:
    """A stand-in key: its material is the spec text (identity by material still applies)."""

    def __init__(self, spec: str) -> None:
        self.keyid = spec

    def to_dict(self) -> dict[str, Any]:
        return {"keytype": "ecdsa", "scheme": "ecdsa-sha2-nistp256",
                "keyval": {"public": self.keyid}}


@FUZZ
@given(mutations(VALID_POLICY) | json_values)
def test_fuzz_policy(tmp_path: Path, doc: Any) -> None:
    _only_modelseal_errors(compile_policy, doc, base_dir=tmp_path, load_key=_Key)


@FUZZ
@given(st.text(max_size=40))
def test_fuzz_time(text: str) -> None:
    _only_modelseal_errors(parse_time, text)


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59"])
def test_time_extremes_found_by_fuzzing(text: str) -> None:
    _only_modelseal_errors(parse_time, text)
