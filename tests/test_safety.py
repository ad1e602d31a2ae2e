"""Model safety: files that would run code when loaded are found and named, nothing is loaded.

Every malicious file here is built with ``pickle.dumps`` (which calls ``__reduce__`` but never
the callable it returns) or by hand, and is never unpickled.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelseal.formats import SAFETY_PREDICATE
from modelseal.safety import (
    SafetyReport,
    safety_predicate,
    safety_subjects,
    scan_model,
    unsafe_findings,
)


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


EVIL = pickle.dumps(_Evil(), protocol=2)
SYSTEM = {"os.system", "posix.system", "nt.system"}


def _safetensors(path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\x00" * 8)


def _npy(path: Path, descr: str, payload: bytes) -> None:
    header = repr({"descr": descr, "fortran_order": False, "shape": (1,)}).encode()
    pad = 64 - (10 + len(header) + 1) % 64
    header += b" " * pad + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    (root / "weights").mkdir(parents=True)
    (root / "evil.pkl").write_bytes(EVIL)
    with zipfile.ZipFile(root / "weights" / "pytorch_model.bin", "w") as z:
        z.writestr("archive/data.pkl", EVIL)
        z.writestr("archive/version", "3\n")
        z.writestr("archive/data/0", b"\x00" * 16)
    (root / "benign.pkl").write_bytes(pickle.dumps({"layers": [1, 2, 3], "names": ["a"]}))
    _safetensors(root / "weights" / "model.safetensors")
    (root / "config.json").write_text('{"hidden": 4}')
    return root


def _by_path(root: Path) -> dict[str, object]:
    return {f.path: f for f in scan_model(root).files}


def test_malicious_pickle_is_unsafe_and_names_os_system(model: Path) -> None:
    r = scan_model(model)
    evil = next(f for f in r.files if f.path == "evil.pkl")
    assert evil.verdict == "unsafe"
    assert evil.format == "pickle"
    assert {x.callable for x in evil.findings if x.severity == "dangerous"} & SYSTEM
    assert not r.ok


def test_malicious_pickle_hidden_in_pytorch_zip_checkpoint(model: Path) -> None:
    ckpt = next(f for f in scan_model(model).files if f.path == "weights/pytorch_model.bin")
    assert ckpt.verdict == "unsafe"
    assert ckpt.format == "pytorch-zip"
    hit = next(x for x in ckpt.findings if x.severity == "dangerous")
    assert hit.callable in SYSTEM
    assert hit.member == "archive/data.pkl"


def test_benign_pickle_is_safe(model: Path) -> None:
    f = next(f for f in scan_model(model).files if f.path == "benign.pkl")
    assert (f.format, f.verdict) == ("pickle", "safe")
    assert not [x for x in f.findings if x.severity != "innocuous"]


def test_safetensors_and_json_are_no_code_formats(model: Path) -> None:
    files = {f.path: f for f in scan_model(model).files}
    st = files["weights/model.safetensors"]
    assert (st.format, st.verdict) == ("safetensors", "no-code-format")
    assert files["config.json"].verdict == "no-code-format"


def test_every_file_has_its_sha256_and_a_relative_path(model: Path) -> None:
    import hashlib

    for f in scan_model(model).files:
        assert not f.path.startswith("/") and ".." not in f.path.split("/")
        assert f.sha256 == hashlib.sha256((model / f.path).read_bytes()).hexdigest()


def test_pickle_renamed_to_safetensors_is_still_scanned(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(EVIL)
    f = scan_model(tmp_path).files[0]
    assert f.verdict == "unsafe" and f.format == "pickle"


def test_bogus_safetensors_header_is_unknown_not_trusted(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"\xff" * 64)
    assert scan_model(tmp_path).files[0].verdict == "unknown"


def test_protocol0_pickle_with_an_innocent_name_is_found(tmp_path: Path) -> None:
    (tmp_path / "weights.dat2").write_bytes(pickle.dumps(_Evil(), protocol=0))
    f = scan_model(tmp_path).files[0]
    assert f.verdict == "unsafe"


def test_legacy_pytorch_pickle_is_unsafe(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(pickle.dumps(_Evil(), protocol=2))
    assert scan_model(tmp_path).files[0].verdict == "unsafe"


def test_compressed_joblib_is_decompressed_and_scanned(tmp_path: Path) -> None:
    (tmp_path / "clf.joblib").write_bytes(gzip.compress(EVIL))
    f = scan_model(tmp_path).files[0]
    assert (f.format, f.verdict) == ("pickle+gzip", "unsafe")


def test_numpy_object_array_is_scanned_and_numeric_array_is_safe(tmp_path: Path) -> None:
    _npy(tmp_path / "obj.npy", "|O", EVIL)
    _npy(tmp_path / "num.npy", "<f4", b"\x00" * 4)
    with zipfile.ZipFile(tmp_path / "arrays.npz", "w") as z:
        z.write(tmp_path / "obj.npy", "x.npy")
    files = {f.path: f for f in scan_model(tmp_path).files}
    assert files["obj.npy"].verdict == "unsafe"
    assert files["num.npy"].verdict == "no-code-format"
    assert files["arrays.npz"].verdict == "unsafe"
    assert files["arrays.npz"].findings[0].member == "x.npy"


def test_unknown_global_is_suspicious_not_safe(tmp_path: Path) -> None:
    (tmp_path / "odd.pkl").write_bytes(b"\x80\x02cmymodule\nMyClass\nq\x00)\x81q\x01.")
    f = scan_model(tmp_path).files[0]
    assert f.verdict == "suspicious"
    assert f.findings[0].callable == "mymodule.MyClass"


def test_garbage_with_pickle_extension_is_unknown(tmp_path: Path) -> None:
    (tmp_path / "broken.pkl").write_bytes(b"\xff\xfe not a pickle")
    assert scan_model(tmp_path).files[0].verdict == "unknown"


def test_python_source_is_recorded_as_unknown_code(tmp_path: Path) -> None:
    (tmp_path / "modeling.py").write_text("import os\n")
    f = scan_model(tmp_path).files[0]
    assert (f.format, f.verdict) == ("python-source", "unknown")


def test_explicit_file_outside_root_is_refused(tmp_path: Path, model: Path) -> None:
    from modelseal.errors import UnsafePathError

    (tmp_path / "outside.pkl").write_bytes(EVIL)
    with pytest.raises(UnsafePathError):
        scan_model(model, [Path("../outside.pkl")])


def test_predicate_round_trip_and_unsafe_findings(model: Path) -> None:
    report = scan_model(model)
    pred = json.loads(json.dumps(safety_predicate(report)))
    assert pred["result"] == "FAILED"
    assert pred["scanner"]["name"] == "picklescan" and pred["scanner"]["version"]
    assert pred["summary"]["unsafe"] == 2
    assert SafetyReport.from_dict(pred).to_dict() == report.to_dict()
    msgs = unsafe_findings(pred)
    assert len(msgs) == 2
    assert any(m.startswith("evil.pkl imports ") and m.endswith(" (unsafe)")
               and m.split()[2] in SYSTEM for m in msgs)
    assert any(m.startswith("weights/pytorch_model.bin (archive/data.pkl) imports ")
               for m in msgs)
    subjects = safety_subjects(report)
    assert {s["name"] for s in subjects} == {f.path for f in report.files}
    assert SAFETY_PREDICATE.startswith("https://")


def test_clean_model_passes(model: Path) -> None:
    (model / "evil.pkl").unlink()
    (model / "weights" / "pytorch_model.bin").unlink()
    pred = safety_predicate(scan_model(model))
    assert pred["result"] == "PASSED"
    assert unsafe_findings(pred) == []


def test_unsafe_findings_fails_closed_on_malformed_predicate() -> None:
    assert unsafe_findings({})
    assert unsafe_findings({"files": [{"path": "a.pkl", "verdict": "weird"}]})
    assert unsafe_findings({"files": [{"verdict": "safe"}]})


def test_scan_command_exits_non_zero_and_names_the_callable(model: Path) -> None:
    from modelseal.cli.commands.bom_cmds import scan

    res = CliRunner().invoke(scan, [str(model), "--json"])
    assert res.exit_code == 10
    pred = json.loads(res.stdout)
    assert pred["result"] == "FAILED"
    assert "evil.pkl imports" in res.stderr


def test_scan_command_passes_a_clean_model(model: Path) -> None:
    from modelseal.cli.commands.bom_cmds import scan

    (model / "evil.pkl").unlink()
    (model / "weights" / "pytorch_model.bin").unlink()
    res = CliRunner().invoke(scan, [str(model)])
    assert res.exit_code == 0, res.output
    assert "benign.pkl" in res.stdout


# --- policy: what `model_safety` refuses ------------------------------------------------


def _facts_with_scan(root: Path) -> tuple[object, dict[str, object]]:
    from datetime import UTC, datetime

    from modelseal.verify.requirements import Attestation, Facts

    report = scan_model(root)
    pred = json.loads(json.dumps(safety_predicate(report)))
    files = {f.path: f.sha256 for f in report.files}
    att = Attestation(id="sha256:" + "a" * 64, predicate_type=SAFETY_PREDICATE,
                      statement={"subject": safety_subjects(report), "predicate": pred},
                      keyid="k" * 64, signer="key kkkk")
    facts = Facts(manifest_digest="sha256:" + "b" * 64, files=files, now=datetime.now(UTC),
                  attestations=[att])
    return facts, pred


def _policy_safety(value: object) -> object:
    from types import SimpleNamespace

    from modelseal.verify.policy import compile_policy
    from modelseal.verify.requirements import ModelSafety

    key = SimpleNamespace(keyid="k", to_dict=lambda: {
        "keytype": "ecdsa", "scheme": "ecdsa-sha2-nistp256", "keyval": {"public": "k"}})
    pol = compile_policy({"layout": "l.json", "layout_keys": ["k"], "model_safety": value},
                         load_key=lambda s: key)  # type: ignore[arg-type,return-value]
    return next(r for r in pol.requirements if isinstance(r, ModelSafety))


def test_model_safety_refuses_a_pickle_it_could_not_read_to_the_end(tmp_path: Path) -> None:
    # a benign pickle, then bytes that are no pickle: not proved safe, so refused by default
    (tmp_path / "m.pkl").write_bytes(pickle.dumps({"ok": 1}) + b"\xff\xfe" * 4 + EVIL)
    _safetensors(tmp_path / "w.safetensors")
    facts, pred = _facts_with_scan(tmp_path)
    assert pred["result"] == "FAILED" and pred["summary"]["unprovenCode"] == 1
    refusals = _policy_safety(True).check(facts)  # type: ignore[attr-defined]
    assert [r.artifact for r in refusals] == ["m.pkl"]
    assert all(r.rule == "model safety" for r in refusals)


def test_model_safety_options_refuse_suspicious_and_unknown_files(tmp_path: Path) -> None:
    (tmp_path / "odd.pkl").write_bytes(b"\x80\x02cmymodule\nMyClass\nq\x00)\x81q\x01.")
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 4)  # no format it knows
    (tmp_path / "modeling.py").write_text("import os\n")
    facts, pred = _facts_with_scan(tmp_path)
    assert pred["result"] == "PASSED"
    assert _policy_safety(True).check(facts) == []  # type: ignore[attr-defined]
    sus = _policy_safety({"include_suspicious": True}).check(facts)  # type: ignore[attr-defined]
    assert [r.artifact for r in sus] == ["odd.pkl"]
    unk = _policy_safety({"include_unknown": True}).check(facts)  # type: ignore[attr-defined]
    assert sorted(r.artifact for r in unk) == ["blob.bin", "modeling.py"]


def test_model_safety_option_of_the_wrong_type_is_a_usage_error() -> None:
    from modelseal.errors import UsageError

    with pytest.raises(UsageError):
        _policy_safety({"include_unknown": "yes"})


def test_old_predicate_without_code_executing_field_fails_closed() -> None:
    pred = {"files": [{"path": "m.pkl", "format": "pickle+gzip", "verdict": "unknown",
                       "findings": []},
                      {"path": "x.bin", "format": "unknown", "verdict": "unknown",
                       "findings": []}]}
    assert [m.split(" ")[0] for m in unsafe_findings(pred)] == ["m.pkl"]


def test_empty_file_is_scanned_and_passes(tmp_path: Path) -> None:
    (tmp_path / "empty.bin").write_bytes(b"")
    (tmp_path / "__init__.py").write_bytes(b"")
    report = scan_model(tmp_path)
    by = {f.path: f for f in report.files}
    assert by["empty.bin"].verdict == "no-code-format"
    assert safety_predicate(report)["result"] == "PASSED"
    assert unsafe_findings(safety_predicate(report)) == []


def test_zip_that_is_also_a_pickle_is_judged_by_both_readings(tmp_path: Path) -> None:
    buf = tmp_path / "inner.zip"
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": 1}))
    (tmp_path / "model.pt").write_bytes(EVIL + buf.read_bytes())
    buf.unlink()
    f = scan_model(tmp_path).files[0]
    assert f.verdict == "unsafe" and f.code_executing
    assert {x.callable for x in f.findings if x.severity == "dangerous"} & SYSTEM


def test_second_pickle_in_a_file_is_scanned(tmp_path: Path) -> None:
    (tmp_path / "m.pkl").write_bytes(pickle.dumps([1, 2]) + EVIL)
    assert scan_model(tmp_path).files[0].verdict == "unsafe"


def test_computed_import_name_is_unsafe(tmp_path: Path) -> None:
    # STACK_GLOBAL whose module name comes out of a call: nobody can tell what it imports
    data = (b"\x80\x04\x8c\x08builtins\x8c\x03str\x93\x8c\x02os\x85R\x8c\x06system\x93"
            b"\x8c\x02id\x85R.")
    (tmp_path / "m.pkl").write_bytes(data)
    f = scan_model(tmp_path).files[0]
    assert f.verdict == "unsafe"
    assert any(x.callable == "<computed>.<computed>" for x in f.findings)


def test_scan_command_refuse_unknown_fails_on_an_unanalysed_format(tmp_path: Path) -> None:
    from modelseal.cli.commands.bom_cmds import scan

    (tmp_path / "modeling.py").write_text("import os\n")
    assert CliRunner().invoke(scan, [str(tmp_path)]).exit_code == 0
    res = CliRunner().invoke(scan, [str(tmp_path), "--refuse-unknown", "--json"])
    assert res.exit_code == 10
    assert json.loads(res.stdout)["files"][0]["codeExecuting"] is False


def test_safetensors_whose_length_reads_as_a_tiny_pickle_is_still_data(tmp_path: Path) -> None:
    # header length 0x2e4e: its bytes "N." are also a complete pickle (None) with no imports
    header = json.dumps({"__metadata__": {"pad": "x" * (0x2E4E - 29)}}).encode()
    assert len(header) == 0x2E4E
    (tmp_path / "m.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    f = scan_model(tmp_path).files[0]
    assert (f.format, f.verdict, f.code_executing) == ("safetensors", "no-code-format", False)


def test_torch_storage_that_reads_as_a_tiny_pickle_does_not_taint_the_checkpoint(
        tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "model.pt", "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": 1}, protocol=2))
        z.writestr("archive/data/0", b"N." + bytes(range(256)))
    f = scan_model(tmp_path).files[0]
    assert (f.format, f.verdict) == ("pytorch-zip", "safe")


def test_payload_at_the_start_of_a_torch_storage_member_is_still_found(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "model.pt", "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": 1}, protocol=2))
        z.writestr("archive/data/0", EVIL)
    f = scan_model(tmp_path).files[0]
    assert f.verdict == "unsafe"
    assert next(x for x in f.findings if x.severity == "dangerous").member == "archive/data/0"


def test_zstd_wrapped_content_is_unknown_code_not_passed(tmp_path: Path) -> None:
    # pandas.read_pickle opens .zst pickles; modelseal cannot look inside, so it cannot pass it
    (tmp_path / "model.pkl.zst").write_bytes(b"\x28\xb5\x2f\xfd" + b"\x00" * 32)
    f = scan_model(tmp_path).files[0]
    assert (f.verdict, f.code_executing) == ("unknown", True)


def test_torchscript_and_keras_archives_are_unknown_not_passed_as_data(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "scripted.pt", "w") as z:
        z.writestr("m/data.pkl", pickle.dumps({"w": 1}, protocol=2))
        z.writestr("m/code/__torch__/m.py", "def forward(self, x):\n    return x\n")
    with zipfile.ZipFile(tmp_path / "net.keras", "w") as z:
        z.writestr("config.json", '{"class_name": "Lambda"}')
        z.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 32)
    by = {f.path: f for f in scan_model(tmp_path).files}
    assert (by["scripted.pt"].format, by["scripted.pt"].verdict) == ("torchscript", "unknown")
    assert by["scripted.pt"].code_executing
    assert (by["net.keras"].format, by["net.keras"].verdict) == ("keras", "unknown")


def test_encrypted_zip_member_is_not_passed(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "model.pt", "w") as z:
        z.writestr("archive/data.pkl", EVIL)
    raw = bytearray((tmp_path / "model.pt").read_bytes())
    # set the "encrypted" flag in the local and central headers
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):
        i = raw.index(sig)
        off = i + (6 if sig == b"PK\x03\x04" else 8)
        raw[off] |= 0x01
    (tmp_path / "model.pt").write_bytes(bytes(raw))
    report = scan_model(tmp_path)
    assert report.files[0].verdict in ("unsafe", "unknown") and report.files[0].code_executing
    assert unsafe_findings(safety_predicate(report))


def test_joblib_array_with_a_lying_item_size_is_not_skipped_blindly(tmp_path: Path) -> None:
    joblib = pytest.importorskip("joblib")
    np = pytest.importorskip("numpy")
    joblib.dump({"a": np.arange(4.0)}, tmp_path / "m.joblib")
    data = (tmp_path / "m.joblib").read_bytes()
    # the pickled dtype state of f8 holds elsize -1 (J\xff\xff\xff\xff); claim 1000 instead
    i = data.index(b"J\xff\xff\xff\xffJ\xff\xff\xff\xff")
    data = data[:i] + b"J" + (1000).to_bytes(4, "little") + data[i + 5:]
    (tmp_path / "m.joblib").write_bytes(data)
    f = scan_model(tmp_path).files[0]
    assert f.verdict == "unknown" and f.code_executing


def test_pickle_after_the_five_of_a_legacy_torch_checkpoint_is_scanned(tmp_path: Path) -> None:
    import safety_corpus

    (tmp_path / "m.pt").write_bytes(safety_corpus._torch_legacy(pickle.dumps({"w": 1})) + EVIL
                                    + b"\x00" * 64)
    assert scan_model(tmp_path).files[0].verdict == "unsafe"


def test_zip_whose_stored_pickle_reads_on_from_the_zip_header_stays_safe(
        tmp_path: Path) -> None:
    # a newline early in the stored data.pkl ends the "PERSID" line that the zip header reads
    # as; the rest of data.pkl then reads as opcodes out of context: that must not taint it
    inner = pickle.dumps({"a\n": __import__("collections").OrderedDict(w=1)}, protocol=2)
    with zipfile.ZipFile(tmp_path / "model.pt", "w") as z:
        z.writestr("archive/data.pkl", inner)
    f = scan_model(tmp_path).files[0]
    assert (f.format, f.verdict) == ("pytorch-zip", "safe")


def test_import_names_with_nul_are_not_imports(tmp_path: Path) -> None:
    (tmp_path / "x.bin").write_bytes(b"cfoo\x00\nbar\n" + bytes(range(128, 256)))
    f = scan_model(tmp_path).files[0]
    assert f.findings == [] and f.verdict == "unknown" and not f.code_executing


def test_zip_of_text_whose_header_reads_as_a_pickle_is_data(tmp_path: Path) -> None:
    # (found by search: with this date the zip header decodes as ASCII, so "PK..." reads as a
    # PERSID line and the member's text after it as a GLOBAL of "mymod.MyClass")
    with zipfile.ZipFile(tmp_path / "m.zip", "w") as z:
        z.writestr(zipfile.ZipInfo("notes.txt", (2026, 1, 1, 0, 0, 0)),
                   b"v0\ncmymod\nMyClass\n)R.")
    f = scan_model(tmp_path).files[0]
    assert (f.format, f.verdict, f.findings) == ("zip", "no-code-format", [])


def test_dotted_name_of_a_dangerous_callable_is_unsafe(tmp_path: Path) -> None:
    # protocol 4 resolves "eval.__call__" on builtins: the call runs builtins.eval
    data = b"\x80\x04\x8c\x08builtins\x8c\reval.__call__\x93\x8c\x031+1\x85R."
    (tmp_path / "m.pkl").write_bytes(data)
    f = scan_model(tmp_path).files[0]
    assert f.verdict == "unsafe"


def test_truncated_compressed_pickle_still_shows_its_payload(tmp_path: Path) -> None:
    # joblib decompresses and unpickles as it goes: the payload runs before the cut is hit
    for name, comp in (("m.pkl.gz", gzip.compress), ("m.pkl.z", __import__("zlib").compress)):
        data = comp(EVIL + pickle.dumps(list(range(50))))  # under 4 KiB decompressed
        (tmp_path / name).write_bytes(data[:-12])
    for f in scan_model(tmp_path).files:
        assert f.verdict == "unsafe", (f.path, f.verdict, f.note)


def test_zip_member_with_a_wrong_crc_is_still_read(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "model.pt", "w") as z:
        z.writestr("archive/data.pkl", EVIL)
    raw = bytearray((tmp_path / "model.pt").read_bytes())
    i = raw.index(b"PK\x03\x04") + 14  # the local header's CRC-32
    raw[i] ^= 0xFF
    j = raw.index(b"PK\x01\x02") + 16  # and the central directory's
    raw[j] ^= 0xFF
    (tmp_path / "model.pt").write_bytes(bytes(raw))
    assert scan_model(tmp_path).files[0].verdict == "unsafe"


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_zip_python_refuses_but_torch_reads_is_walked_by_local_headers(
        tmp_path: Path, compression: int) -> None:
    # (found by differential fuzzing: torch.load ran this payload; zipfile refuses the
    # archive for its "version needed to extract")
    with zipfile.ZipFile(tmp_path / "model.pt", "w", compression=compression) as z:
        z.writestr("archive/version", "3\n")
        z.writestr("archive/data.pkl", EVIL)
    raw = bytearray((tmp_path / "model.pt").read_bytes())
    for k in range(2):
        i = raw.index(b"PK\x01\x02", raw.index(b"PK\x01\x02") + 1 if k else 0)
        raw[i + 6] = 0xFF  # version needed to extract: 25.5
    (tmp_path / "model.pt").write_bytes(bytes(raw))
    f = scan_model(tmp_path).files[0]
    assert f.verdict == "unsafe"
    assert next(x for x in f.findings if x.severity == "dangerous").member == "archive/data.pkl"


def test_npy_header_it_cannot_read_is_not_passed(tmp_path: Path) -> None:
    # numpy reads Python 2 "1L" shapes and, with allow_pickle, headers of any size
    (tmp_path / "a.npy").write_bytes(_npy_header_raw(b"{'descr': '|O', 'fortran_order': False, "
                                                     b"'shape': (1L,), }") + EVIL)
    (tmp_path / "b.npy").write_bytes(b"\x93NUMPY\x02\x00" + (3 << 20).to_bytes(4, "little")
                                     + b" " * 64)
    by = {f.path: f for f in scan_model(tmp_path).files}
    assert by["a.npy"].verdict == "unsafe"  # read as numpy reads it
    assert by["b.npy"].verdict == "unknown" and by["b.npy"].code_executing


def _npy_header_raw(header: bytes) -> bytes:
    header += b" " * (64 - (10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def test_tar_with_a_zip_appended_is_read_as_both(tmp_path: Path) -> None:
    # (found by differential fuzzing: torch.load takes the tar path and runs its pickle;
    # zipfile finds the appended zip from the end)
    import safety_corpus

    tar = safety_corpus._torch_legacy_tar(EVIL)
    (tmp_path / "m.pt").write_bytes(tar + safety_corpus._torch_zip(pickle.dumps({"w": 1})))
    f = scan_model(tmp_path).files[0]
    assert f.verdict == "unsafe"
    assert next(x for x in f.findings if x.severity == "dangerous").member == "storages"
