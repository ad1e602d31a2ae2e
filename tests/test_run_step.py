"""Recording steps (``modelseal run``) and the statements ``modelseal attest`` signs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelseal.attest import bundle, output, signers, statement, steps
from modelseal.errors import InputError, UsageError

MODELSEAL = [sys.executable, "-m", "modelseal.cli"]


@pytest.fixture
def key(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "keys").mkdir()
    return signers.keygen(tmp_path / "keys" / "ci")


def _ms(*args: str, cwd: Path,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MODELSEAL, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120, check=False)


def _verify(path: Path, pub: Path) -> bundle.VerifiedStatement:
    k = signers.load_public_key(pub)
    return bundle.verify_bundle(path.read_bytes(), keys={k.keyid: k})


def _workdir(tmp_path: Path) -> Path:
    w = tmp_path / "work"
    (w / "data" / "sub").mkdir(parents=True)
    (w / "data" / "train.csv").write_text("a,b\n1,2\n")
    (w / "data" / "sub" / "extra.csv").write_text("c\n3\n")
    (w / "data" / "notes.tmp").write_text("scratch")
    (w / ".git").mkdir()
    (w / ".git" / "HEAD").write_text("ref: main")
    return w


def test_run_records_materials_products_and_exit_code(tmp_path: Path,
                                                      key: tuple[Path, Path]) -> None:
    w = _workdir(tmp_path)
    r = _ms("run", "--step", "train", "--signer", str(key[0]), "-m", "data", "-p", "model",
            "--json", "--", sys.executable, "-c",
            "import os; os.makedirs('model', exist_ok=True); "
            "open('model/w.bin','wb').write(b'weights')", cwd=w)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    path = Path(out["attestation"])
    assert path.parent == w / ".modelseal" / "attestations"
    assert path.name.startswith("train.") and path.name.endswith(".intoto.sigstore.json")
    v = _verify(path, key[1])
    assert v.predicate_type == statement.LINK_PREDICATE
    pred = v.statement["predicate"]
    assert pred["name"] == "train"
    assert pred["command"][0] == sys.executable
    assert [m["name"] for m in pred["materials"]] == [
        "data/notes.tmp", "data/sub/extra.csv", "data/train.csv"]
    assert pred["byproducts"] == {"return-value": 0}
    import hashlib
    assert v.subjects == [("model/w.bin", hashlib.sha256(b"weights").hexdigest())]


def test_run_passes_the_exit_code_on_and_still_signs(tmp_path: Path,
                                                     key: tuple[Path, Path]) -> None:
    w = _workdir(tmp_path)
    r = _ms("run", "--step", "evaluate", "--signer", str(key[0]), "-m", "data", "--",
            sys.executable, "-c", "raise SystemExit(3)", cwd=w)
    assert r.returncode == 3
    (att,) = (w / ".modelseal" / "attestations").iterdir()
    assert _verify(att, key[1]).statement["predicate"]["byproducts"]["return-value"] == 3


def test_run_command_not_found_exits_127_and_writes_nothing(tmp_path: Path,
                                                            key: tuple[Path, Path]) -> None:
    w = _workdir(tmp_path)
    r = _ms("run", "--step", "train", "--signer", str(key[0]), "--", "no-such-command-xyz",
            cwd=w)
    assert r.returncode == 127
    assert "command not found: no-such-command-xyz" in r.stderr
    assert not (w / ".modelseal").exists()


def test_run_with_a_bad_signer_fails_before_running_the_command(tmp_path: Path) -> None:
    w = _workdir(tmp_path)
    r = _ms("run", "--step", "train", "--signer", "nosuch:scheme", "--",
            "touch", "ran", cwd=w)
    assert r.returncode == 6
    assert "unknown signer" in r.stderr
    assert not (w / "ran").exists()


def test_run_with_wrong_passphrase_fails_before_running(tmp_path: Path) -> None:
    w = _workdir(tmp_path)
    k, _ = signers.keygen(tmp_path / "enc", passphrase=b"right")
    r = _ms("run", "--step", "train", "--signer", str(k), "--", "touch", "ran", cwd=w,
            env={signers.PASSPHRASE_ENV: "wrong"})
    assert r.returncode == 6 and "wrong passphrase" in r.stderr
    assert not (w / "ran").exists()


def test_run_records_streams_and_selected_environment(tmp_path: Path,
                                                      key: tuple[Path, Path]) -> None:
    w = _workdir(tmp_path)
    r = _ms("run", "--step", "s", "--signer", str(key[0]), "--record-streams", "--env",
            "MODEL_SEED", "--env", "NOT_SET_ANYWHERE", "--", sys.executable, "-c",
            "import sys; print('out!'); print('err!', file=sys.stderr)", cwd=w,
            env={"MODEL_SEED": "42", "SECRET_TOKEN": "do-not-record"})
    assert r.returncode == 0, r.stderr
    assert "out!" in r.stdout and "err!" in r.stderr  # still shown to the user
    (att,) = (w / ".modelseal" / "attestations").iterdir()
    pred = _verify(att, key[1]).statement["predicate"]
    assert pred["byproducts"]["stdout"] == "out!\n"
    assert pred["byproducts"]["stderr"] == "err!\n"
    assert pred["environment"] == {"MODEL_SEED": "42"}
    assert "do-not-record" not in att.read_text()


@pytest.mark.parametrize("record_streams", [False, True])
def test_run_json_stdout_is_only_json_when_the_command_prints(
        tmp_path: Path, key: tuple[Path, Path], record_streams: bool) -> None:
    """A CI job pipes `run --json` into jq: the wrapped command's stdout must not corrupt it."""
    w = _workdir(tmp_path)
    extra = ["--record-streams"] if record_streams else []
    r = _ms("run", "--step", "s", "--signer", str(key[0]), *extra, "--json", "--",
            sys.executable, "-c", "print('epoch 1 loss 0.3'); print('{not json')", cwd=w)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["step"] == "s"
    assert "epoch 1 loss 0.3" in r.stderr  # still shown to the user, on stderr


def test_excludes_work_like_in_toto_run(tmp_path: Path) -> None:
    w = _workdir(tmp_path)
    names = [n for n, _ in steps.hash_artifacts(["."], base_dir=w, exclude=["*.tmp", "sub/"])]
    assert names == ["data/train.csv"]  # .git excluded by default, *.tmp and sub/ by pattern
    names = [n for n, _ in steps.hash_artifacts(["."], base_dir=w, default_excludes=False)]
    assert ".git/HEAD" in names


def test_materials_given_as_files_and_absolute_paths(tmp_path: Path) -> None:
    w = _workdir(tmp_path)
    got = steps.hash_artifacts([w / "data" / "train.csv", "data/sub"], base_dir=w)
    assert [n for n, _ in got] == ["data/sub/extra.csv", "data/train.csv"]


def test_symlink_loop_is_an_input_error(tmp_path: Path) -> None:
    w = _workdir(tmp_path)
    (w / "data" / "sub" / "loop").symlink_to(w / "data")
    with pytest.raises(InputError, match="symlink loop"):
        steps.collect_files(["data"], base_dir=w)


def test_self_referencing_symlink_is_an_input_error(tmp_path: Path) -> None:
    w = _workdir(tmp_path)
    (w / "data" / "self").symlink_to("self")
    with pytest.raises(InputError, match="symlink"):
        steps.collect_files(["data"], base_dir=w)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads unreadable files")
def test_unreadable_material_is_an_input_error(tmp_path: Path) -> None:
    w = _workdir(tmp_path)
    (w / "data" / "train.csv").chmod(0)
    with pytest.raises(InputError, match="cannot read"):
        steps.hash_artifacts(["data"], base_dir=w)


def test_broken_symlink_in_materials_fails_before_running(tmp_path: Path,
                                                                key: tuple[Path, Path]) -> None:
    w = _workdir(tmp_path)
    (w / "data" / "d").mkdir()
    (w / "data" / "d" / "dangling").symlink_to(w / "nowhere")
    r = _ms("run", "--step", "t", "--signer", str(key[0]), "-m", "data", "--", "touch", "ran",
            cwd=w)
    assert r.returncode == 2 and "broken symlink" in r.stderr
    assert not (w / "ran").exists() and not (w / ".modelseal").exists()


def test_missing_material_is_an_input_error(tmp_path: Path) -> None:
    w = _workdir(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        steps.record_step("t", ["true"], ["nope"], base_dir=w)


def test_missing_product_after_success_is_an_input_error(tmp_path: Path) -> None:
    w = _workdir(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        steps.record_step("t", ["true"], [], ["model"], base_dir=w)
    rc, st = steps.record_step("t", ["false"], [], ["model"], base_dir=w)
    assert rc == 1 and statement.statement_to_link(st).products == {}


def test_step_without_products_has_a_subject_in_toto_and_sigstore_accept(
        tmp_path: Path) -> None:
    """An approval writes nothing; its Statement still needs a subject (in-toto's libraries
    and Sigstore refuse an empty list, so keyless approve could never be signed)."""
    from in_toto_attestation.v1.statement import Statement as ItaStatement
    from sigstore import dsse

    from modelseal._util.json import canonical_json

    w = _workdir(tmp_path)
    _, st = steps.record_step("approve", ["true"], ["data"], base_dir=w)
    assert [s["name"] for s in st["subject"]] == [statement.MATERIALS_SUBJECT]
    mats = [(m["name"], m["digest"]["sha256"]) for m in st["predicate"]["materials"]]
    assert st["subject"][0]["digest"]["sha256"] == statement.materials_digest(mats)
    assert statement.statement_to_link(st).products == {}  # not a product of the step
    dsse.Statement(canonical_json(st))  # what keyless signing validates
    from google.protobuf import json_format
    from in_toto_attestation.v1 import statement_pb2

    pb = json_format.ParseDict(st, statement_pb2.Statement())  # type: ignore[attr-defined]
    ItaStatement.copy_from_pb(pb).validate()  # in-toto's own check: a subject is required


def test_materials_subject_with_another_digest_stays_a_product(tmp_path: Path) -> None:
    w = _workdir(tmp_path)
    _, st = steps.record_step("approve", ["true"], ["data"], base_dir=w)
    st["predicate"]["materials"] = st["predicate"]["materials"][1:]  # digest no longer matches
    products = statement.statement_to_link(st).products
    assert list(products) == [statement.MATERIALS_SUBJECT]  # the layout's DISALLOW sees it


def test_bad_step_names_are_refused() -> None:
    for name in ("../evil", "a/b", ".hidden", "", "a..b"):
        with pytest.raises(UsageError):
            output.check_step_name(name)


def test_signal_death_is_reported_like_a_shell(tmp_path: Path) -> None:
    rc, _, _ = steps.run_command([sys.executable, "-c",
                                  "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"])
    assert rc == 128 + 15


def test_write_attestation_is_atomic(tmp_path: Path) -> None:
    from modelseal.attest.output import write_file

    target = tmp_path / "atts" / "x.intoto.sigstore.json"
    write_file(b"first", target)
    write_file(b"second", target)
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # no temp files


def test_run_step_api_signs_a_link_in_toto_can_read(tmp_path: Path,
                                                     key: tuple[Path, Path]) -> None:
    w = _workdir(tmp_path)
    out = steps.run_step("prep", ["true"], signers.load_signer(str(key[0])), materials=["data"],
                         base_dir=w, attestations_dir=tmp_path / "atts")
    assert out.attestation.parent == tmp_path / "atts" and out.returncode == 0
    link = statement.statement_to_link(_verify(out.attestation, key[1]).statement)
    assert link.name == "prep"
    assert set(link.materials) == {"data/notes.tmp", "data/sub/extra.csv", "data/train.csv"}
    assert link.byproducts == {"return-value": 0}


# --- attest --------------------------------------------------------------------------------


def test_attest_custom_predicate(tmp_path: Path, key: tuple[Path, Path]) -> None:
    w = _workdir(tmp_path)
    (w / "approval.json").write_text('{"stage": "production", "ticket": "CHG-1"}')
    r = _ms("attest", "-t", "https://example.com/approval/v1", "--predicate", "approval.json",
            "--subject", "data/train.csv", "--subject-digest", f"model=sha256:{'ab' * 32}",
            "--signer", str(key[0]), "-o", "approval.sigstore.json", cwd=w)
    assert r.returncode == 0, r.stderr
    v = _verify(w / "approval.sigstore.json", key[1])
    assert v.predicate_type == "https://example.com/approval/v1"
    assert v.statement["predicate"]["ticket"] == "CHG-1"
    assert [n for n, _ in v.subjects] == ["data/train.csv", "model"]


def test_attest_evaluation_fails_on_missed_threshold_after_signing(
        tmp_path: Path, key: tuple[Path, Path]) -> None:
    w = _workdir(tmp_path)
    (w / "metrics.json").write_text('{"accuracy": 0.93, "eval": {"f1": 0.7}}')
    args = ["attest", "evaluation", "--metrics", "metrics.json", "--subject", "data",
            "--signer", str(key[0]), "--threshold", "accuracy>=0.9"]
    ok = _ms(*args, "-o", "pass.json", cwd=w)
    assert ok.returncode == 0, ok.stderr
    assert _verify(w / "pass.json", key[1]).statement["predicate"]["result"] == "PASSED"
    bad = _ms(*args, "--threshold", "eval.f1>0.8", "-o", "fail.json", cwd=w)
    assert bad.returncode == 1
    pred = _verify(w / "fail.json", key[1]).statement["predicate"]
    assert pred["result"] == "FAILED"
    assert pred["failedTests"] == ["eval.f1>0.8"]
    assert pred["passedTests"] == ["accuracy>=0.9"]
    assert pred["metrics"]["accuracy"] == 0.93
    assert pred["configuration"][0]["name"] == "metrics.json"


def test_attest_provenance_from_github_actions_env(tmp_path: Path,
                                                   key: tuple[Path, Path]) -> None:
    w = _workdir(tmp_path)
    gha = {"GITHUB_ACTIONS": "true", "GITHUB_SERVER_URL": "https://github.com",
           "GITHUB_REPOSITORY": "acme/models", "GITHUB_RUN_ID": "77", "GITHUB_RUN_ATTEMPT": "2",
           "GITHUB_SHA": "c0ffee" * 6 + "abcd",
           "GITHUB_WORKFLOW_REF": "acme/models/.github/workflows/train.yml@refs/heads/main"}
    r = _ms("attest", "provenance", "--param", "lr=0.001", "--param", "epochs=3",
            "--dataset", "data", "--base-model", f"llama=sha256:{'cd' * 32}@hf://meta/llama",
            "--started-on", "2025-01-01T10:00:00Z", "--subject", "data/train.csv",
            "--signer", str(key[0]), "-o", "prov.json", cwd=w, env=gha)
    assert r.returncode == 0, r.stderr
    pred = _verify(w / "prov.json", key[1]).statement["predicate"]
    bd, rd = pred["buildDefinition"], pred["runDetails"]
    assert bd["externalParameters"]["hyperparameters"] == {"lr": 0.001, "epochs": 3}
    deps = {d["name"]: d for d in bd["resolvedDependencies"]}
    assert deps["code"]["digest"] == {"gitCommit": gha["GITHUB_SHA"]}
    assert deps["code"]["uri"] == "git+https://github.com/acme/models"
    assert deps["llama"]["uri"] == "hf://meta/llama"
    assert deps["data"]["annotations"]["files"] == 3
    assert rd["builder"]["id"] == ("https://github.com/acme/models/.github/workflows/"
                                   "train.yml@refs/heads/main")
    assert rd["metadata"]["invocationId"].endswith("/actions/runs/77/attempts/2")
    assert rd["metadata"]["startedOn"] == "2025-01-01T10:00:00Z"
    assert "finishedOn" in rd["metadata"]


def test_thresholds_parse_and_refuse_nonsense() -> None:
    t = statement.parse_threshold("accuracy >= 0.9")
    assert (t.metric, t.op, t.value) == ("accuracy", ">=", 0.9)
    for bad in ("accuracy", "accuracy=>0.9", ">=0.9", "acc>=high", "acc>=nan"):
        with pytest.raises(UsageError):
            statement.parse_threshold(bad)
    passed, failed = statement.evaluate({"loss": 0.2}, [statement.parse_threshold("loss<0.3"),
                                                         statement.parse_threshold("acc>0.5")])
    assert passed == ["loss<0.3"] and failed == ["acc>0.5 (metric missing)"]


def test_gitlab_ci_context() -> None:
    ci = statement.ci_context({"GITLAB_CI": "true", "CI_SERVER_URL": "https://gitlab.example",
                               "CI_PROJECT_PATH": "ml/m", "CI_JOB_URL": "https://gl/job/9",
                               "CI_COMMIT_SHA": "abc", "CI_RUNNER_ID": "5",
                               "CI_PROJECT_URL": "https://gitlab.example/ml/m"})
    assert ci.builder_id == "https://gitlab.example/ml/m/-/runners/5"
    assert ci.invocation_id == "https://gl/job/9" and ci.commit == "abc"
    assert statement.ci_context({}) == statement.CIContext()


def test_keygen_cli_writes_a_private_key_only_the_owner_reads(tmp_path: Path) -> None:
    r = _ms("keygen", "alice", "--algorithm", "ed25519", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (tmp_path / "alice.key").stat().st_mode & 0o777 == 0o600
    assert out["keyid"] == signers.load_public_key(tmp_path / "alice.pub").keyid
    again = _ms("keygen", "alice", cwd=tmp_path)
    assert again.returncode != 0 and "already exists" in again.stderr
