"""Hostile input: whoever can push a referrer, write a manifest or hand over a file must not be
able to crash modelseal, exhaust it, or stop the verification of a model whose legitimate
evidence is complete. Bad input is refused with a reason and a documented exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hostile_fixtures import (
    attach_blobs,
    attach_raw,
    big_blob,
    bundle,
    hostile_blobs,
    index_add,
    link_statement,
)
from modelseal._util import json as bounded_json
from modelseal._util.limits import (
    MAX_ATTESTATION_BYTES,
    MAX_JSON_DEPTH,
    MAX_SIGNATURES_PER_ENVELOPE,
)
from modelseal._util.time import parse_time
from modelseal.attest.attachments import subject_of
from modelseal.attest.bundle import parse_bundle
from modelseal.errors import InputError, UnsafePathError, UsageError
from modelseal.formats import INDEX_V1, MANIFEST_V1
from modelseal.modelpack import ModelMetadata, parse_model_manifest
from modelseal.oci import open_store
from modelseal.oci.referrers import fallback_tag
from modelseal.oci.store import Descriptor
from modelseal.refs import parse_ref
from modelseal.transfer import push
from modelseal.verify.pipeline import verify_model
from modelseal.verify.policy import compile_policy, load_policy
from pipeline_fixtures import honest_pipeline
from registry_server import RegistryServer

HEX = "a" * 64
DIGEST = f"sha256:{HEX}"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelseal.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


# ---------------------------------------------------------------------------------------------
# verify with hostile referrers next to the legitimate ones


def test_verify_stands_when_hostile_referrers_are_attached(tmp_path: Path,
                                                          registry: RegistryServer) -> None:
    p = honest_pipeline(tmp_path, registry.host)
    subject = subject_of(p.store, p.digest)
    kinds = hostile_blobs(p.digest)
    descs = attach_blobs(p.store, subject, kinds.values())
    hostile = dict(zip(kinds, (d.digest for d in descs), strict=True))
    # larger than the bound: named by the blob annotation (cut while streaming) and by a
    # manifest whose layer says its size (refused before any byte is fetched)
    big = big_blob(p.store, tmp_path / "big.bin", MAX_ATTESTATION_BYTES + (1 << 20))
    hostile["big-annotated"] = attach_raw(p.store, subject, big).digest
    hostile["big-by-size"] = attach_raw(p.store, subject, big, name_blob=False).digest
    # an extreme time offset in the (unsigned) created annotation of a hostile bundle
    odd = attach_blobs(p.store, subject, [bundle(link_statement(p.digest, None, "package"))],
                       created="0001-01-01T00:00:00+23:59")
    hostile["extreme-time"] = odd[0].digest

    result = verify_model(p.store, p.ref, load_policy(p.policy_path))

    assert result.verified, [r.message for r in result.refusals]
    ignored = {i.attestation for i in result.ignored}
    missing = {kind: d for kind, d in hostile.items() if d not in ignored}
    assert not missing, f"not recorded as ignored: {missing}"


class _HostileIndexStore:
    """A store whose fallback referrers index is replaced by hostile bytes (what anyone who
    can push a tag can do)."""

    def __init__(self, inner: Any, index: bytes) -> None:
        self.inner, self.index = inner, index

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def get_manifest(self, reference: str) -> tuple[bytes, str, str]:
        if reference.startswith("sha256-") and "-" not in reference[len("sha256-"):]:
            return self.index, INDEX_V1, DIGEST
        return self.inner.get_manifest(reference)  # type: ignore[no-any-return]


@pytest.mark.parametrize("index", [
    b"[" * 50_000 + b"]" * 50_000,
    b'{"manifests": [1, "x", {"digest": {}}, {"mediaType": "a/b", "digest": "sha256:x", '
    b'"size": -1}]}',
    b'{"manifests": {"not": "a list"}}',
    b"\xff\xfe",
])
def test_verify_survives_a_hostile_referrers_index(tmp_path: Path, registry: RegistryServer,
                                                  index: bytes) -> None:
    p = honest_pipeline(tmp_path, registry.host)
    store = _HostileIndexStore(p.store, index)
    result = verify_model(store, p.ref, load_policy(p.policy_path))  # type: ignore[arg-type]
    assert result.verified, [r.message for r in result.refusals]


def test_verify_ignores_referrers_past_the_bound(tmp_path: Path, registry: RegistryServer,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import modelseal.verify.evidence as evidence

    p = honest_pipeline(tmp_path, registry.host)
    monkeypatch.setattr(evidence, "MAX_REFERRERS", 3)
    result = verify_model(p.store, p.ref, load_policy(p.policy_path))
    assert not result.verified  # five steps need five referrers: fails closed, with a reason
    over = [i for i in result.ignored if "referrers per verification" in i.reason]
    assert len(over) == 2
    assert any("more than the 3" in w for w in result.warnings)


def test_verify_stops_reading_past_the_byte_bound(tmp_path: Path, registry: RegistryServer,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import modelseal.verify.evidence as evidence

    p = honest_pipeline(tmp_path, registry.host)
    one = max(len(b) for b in p.bundles.values())
    monkeypatch.setattr(evidence, "MAX_EVIDENCE_BYTES", 2 * one)
    monkeypatch.setattr(evidence, "PER_FILE_ATTESTATION_BYTES", 0)
    result = verify_model(p.store, p.ref, load_policy(p.policy_path))
    assert not result.verified  # fails closed, naming the bound
    over = [i for i in result.ignored if "bytes of attestations per verification" in i.reason]
    assert len(over) >= 3


# ---------------------------------------------------------------------------------------------
# bundles


def test_envelope_with_100000_signatures_is_refused_unread() -> None:
    data = bundle(b"{}", signatures=100_000, sig=b"\x01", hint="k")
    assert len(data) < MAX_ATTESTATION_BYTES  # the signature count is what refuses it
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=str(MAX_SIGNATURES_PER_ENVELOPE)):
        parse_bundle(data)
    assert time.perf_counter() - t0 < 2


def test_bundle_larger_than_the_bound_is_refused() -> None:
    with pytest.raises(InputError):
        parse_bundle(b" " * (MAX_ATTESTATION_BYTES + 1))


def test_unsigned_statement_with_malformed_predicate_reads_as_no_statement() -> None:
    pb = parse_bundle(bundle(link_statement(DIGEST, ["x"])))
    assert pb.statement is None and pb.predicate_type is None


# ---------------------------------------------------------------------------------------------
# manifests and descriptors


def _manifest(**over: Any) -> bytes:
    doc: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": MANIFEST_V1,
        "config": {"mediaType": "application/vnd.cncf.model.config.v1+json", "digest": DIGEST,
                   "size": 2},
        "layers": [{"mediaType": "application/vnd.cncf.model.weight.v1.raw", "digest": DIGEST,
                    "size": 1, "annotations": {"org.opencontainers.image.title": "w.bin",
                                               "org.cncf.model.filepath": "sub/w.bin"}}],
    }
    doc.update(over)
    return json.dumps({k: v for k, v in doc.items() if v is not None}).encode()


def test_manifest_that_is_also_an_index_is_refused() -> None:
    with pytest.raises(InputError, match="CVE-2021-41190"):
        parse_model_manifest(_manifest(manifests=[]), DIGEST)
    with pytest.raises(InputError):
        parse_model_manifest(_manifest(mediaType=INDEX_V1), DIGEST)


def test_layer_title_that_disagrees_with_its_filepath_is_refused() -> None:
    layer = json.loads(_manifest())["layers"][0]
    layer["annotations"]["org.opencontainers.image.title"] = "other.bin"
    with pytest.raises(UnsafePathError):
        parse_model_manifest(_manifest(layers=[layer]), DIGEST)
    assert parse_model_manifest(_manifest(), DIGEST).files == {"sub/w.bin": DIGEST}


@pytest.mark.parametrize("mutation", [
    {"layers": {"a": 1}}, {"layers": [1]}, {"layers": [{"digest": DIGEST}]},
    {"layers": [{"mediaType": "a/b", "digest": DIGEST, "size": "1"}]},
    {"layers": [{"mediaType": "a/b", "digest": DIGEST, "size": True}]},
    {"layers": [{"mediaType": "a/b", "digest": "../../etc", "size": 1}]},
    {"config": "x"}, {"config": None}, {"annotations": [1]}, {"annotations": {"a": 1}},
    {"artifactType": 7}, {"schemaVersion": "2"},
])
def test_manifest_with_missing_or_mistyped_fields_is_an_input_error(
        mutation: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        parse_model_manifest(_manifest(**mutation), DIGEST)


def test_descriptor_from_dict_never_raises_anything_but_input_error() -> None:
    for d in (None, [], {"mediaType": 1}, {"mediaType": "a/b", "digest": 1, "size": 1},
              {"mediaType": "a/b", "digest": DIGEST, "size": -1},
              {"mediaType": "a/b", "digest": DIGEST, "size": 1, "artifactType": []}):
        with pytest.raises(InputError):
            Descriptor.from_dict(d)


# ---------------------------------------------------------------------------------------------
# the JSON reader


def test_json_deeper_than_the_bound_is_refused_before_parsing() -> None:
    with pytest.raises(InputError, match=str(MAX_JSON_DEPTH)):
        bounded_json.loads(b"[" * 1_000_000 + b"]" * 1_000_000, what="doc")
    ok = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert bounded_json.loads(ok, what="doc") is not None


@pytest.mark.parametrize("doc", [b'{"a": 1, "a": 2}', b"[NaN]", b'"\\udc80"', b"\xff",
                                 b"\xef\xbb\xbf{}"])
def test_json_reader_refuses_ambiguous_or_unencodable_documents(doc: bytes) -> None:
    with pytest.raises(InputError):
        bounded_json.loads(doc, what="doc")


def test_extreme_time_offset_is_an_input_error() -> None:
    for t in ("0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59"):
        with pytest.raises(InputError):
            parse_time(t)


# ---------------------------------------------------------------------------------------------
# metadata files and policies


@pytest.mark.parametrize("content", [
    b"name: \xff\xfe\n",                                     # not UTF-8
    b"name: m\ncreatedAt: 2024-01-01\n",                     # a YAML date, not a string
    b'name: "\\udc80"\n',                                    # a lone surrogate
    b"a: &a [x, x, x, x, x, x, x, x, x, x]\n" + b"".join(    # an alias bomb
        b"%s: &%s [*%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s]\n" % ((bytes([c]),) * 2
        + (bytes([c - 1]),) * 10) for c in range(ord("b"), ord("j"))),
    b"[" * 10_000,                                           # deep YAML
    b"descriptor: [1, 2]\n",
    b"annotations: {a: {b: c}}\n",
])
def test_bad_metadata_file_is_an_input_error(tmp_path: Path, content: bytes) -> None:
    f = tmp_path / "meta.yaml"
    f.write_bytes(content)
    with pytest.raises(InputError):
        ModelMetadata.load(f)


def test_non_utf8_file_name_is_refused_when_packaging(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "ok.bin").write_bytes(b"1")
    (model / os.fsdecode(b"\xff.bin")).write_bytes(b"2")
    store = open_store(parse_ref(f"oci:{tmp_path / 'layout'}:v1"))
    with pytest.raises(UnsafePathError):
        push(model, store, parse_ref(f"oci:{tmp_path / 'layout'}:v1"),
             ModelMetadata({"name": "m"}))


@pytest.mark.parametrize("extra", [
    {"required_predicates": "https://x"}, {"required_predicates": 5},
    {"required_predicates": [{"type": "t", "step": 3}]},
    {"distinct_signers": {"a": "b"}}, {"distinct_signers": 1},
    {"required_stage": {"stage": "p", "step": []}},
    {"model_safety": {"include_suspicious": "no"}}, {"model_safety": {"step": 1}},
    {"max_attestation_age": 1e308}, {"max_attestation_age": "99999999999999999999d"},
    {"max_attestation_age": float("nan")}, {"version": True},
    {"layout": "bad\x00path"}, {"layout_keys": ["k\x00.pub"]},
    {"layout_keys": ["/" + "x" * 5000]}, {"trusted_root": 3},
])
def test_policy_with_mistyped_values_is_a_usage_error(tmp_path: Path,
                                                      extra: dict[str, Any]) -> None:
    data: dict[str, Any] = {"layout": str(tmp_path / "l.json"), "layout_keys": ["k.pub"],
                            **extra}
    with pytest.raises(UsageError):  # InputError is a UsageError: exit 2 either way
        compile_policy(data, base_dir=tmp_path, load_key=lambda s: _FakeKey(s))


class _FakeKey:
    def __init__(self, spec: str) -> None:
        if "\x00" in spec or len(spec) > 4096:
            Path(spec).read_bytes()  # what the real loader does: ValueError, OSError
        self.keyid = spec


@pytest.mark.parametrize("content", [b"layout: \xff\n", b"[" * 10_000, b"a: 1\n" * 300_000])
def test_bad_policy_file_exits_2(tmp_path: Path, content: bytes) -> None:
    f = tmp_path / "policy.yaml"
    f.write_bytes(content)
    r = cli("verify", f"oci:{tmp_path / 'nothing'}:v1", "--policy", str(f))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------------
# printing untrusted text


def test_inspect_prints_markup_in_names_and_annotations_as_text(tmp_path: Path) -> None:
    model = tmp_path / "m"
    (model / "a[").mkdir(parents=True)
    (model / "a[" / "b]").write_bytes(b"weights")
    ref = f"oci:{tmp_path / 'layout'}:v1"
    store = open_store(parse_ref(ref))
    md = ModelMetadata({"name": "m"}, annotations={"note": "[white on white]hidden[/]",
                                                   "esc": "\x1b[8mconcealed\x1b[0m \u202eevil"})
    push(model, store, parse_ref(ref), md)
    r = cli("inspect", ref)
    assert r.returncode == 0, r.stderr
    assert "a[/b]" in r.stdout
    assert "[white on white]hidden[/]" in r.stdout
    # terminal control sequences and bidi overrides are shown, not obeyed
    assert "\x1b" not in r.stdout and "\u202e" not in r.stdout
    assert "\\x1b[8mconcealed" in r.stdout and "\\u202eevil" in r.stdout


def test_attestations_listing_prints_markup_as_text(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "w.bin").write_bytes(b"weights")
    ref = f"oci:{tmp_path / 'layout'}:v1"
    store = open_store(parse_ref(ref))
    digest = push(model, store, parse_ref(ref), ModelMetadata({"name": "m"})).digest
    subject = subject_of(store, digest)
    store.put_blob_bytes(b"{}")
    st = json.loads(link_statement(digest, None))
    st["predicateType"] = "[/b][on red]x"
    blob = bundle(json.dumps(st).encode())
    layer = Descriptor("application/vnd.dev.sigstore.bundle.v0.3+json",
                       store.put_blob_bytes(blob), len(blob))
    d = attach_raw(store, subject, layer,
                   annotations={"dev.sigstore.bundle.predicateType": "[/b][on red]x",
                                "org.opencontainers.image.created": "[blink]now"})
    index_add(store, digest, [d])
    r = cli("attestations", ref)
    assert r.returncode == 0, r.stderr
    assert "[/b][on red]x" in r.stdout and "[blink]now" in r.stdout
    assert fallback_tag(digest)  # the index was written where readers look


def test_attestation_bound_grows_with_the_verified_models_file_count(tmp_path: Path) -> None:
    """A 5 MiB bundle is hostile next to a five-file model and refused unread; next to a
    20,000-file model (whose honest links list every file) it is within the bound. The bound
    comes from the verified manifest, which an attacker cannot enlarge, and stops at a hard
    ceiling."""
    from modelseal._util.limits import MAX_BUNDLE_BYTES, attestation_bound
    from modelseal.verify.evidence import fetch_evidence

    store = open_store(parse_ref(f"oci:{tmp_path / 'store'}:v1"))
    subject_desc = Descriptor(MANIFEST_V1, "sha256:" + "ab" * 32, 2)
    big = big_blob(store, tmp_path / "big.bin", 5 << 20)
    attach_raw(store, subject_desc, big, name_blob=False)
    for files, refused in ((5, True), (20_000, False)):
        _, _, _, ignored = fetch_evidence(store, subject_desc.digest, files=files)
        size_refusals = [i for i in ignored if "bytes; an attestation must be" in i.reason]
        assert bool(size_refusals) is refused, (files, [i.reason for i in ignored])
    assert attestation_bound(10**9) == MAX_BUNDLE_BYTES
