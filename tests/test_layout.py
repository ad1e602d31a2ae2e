"""Layouts: templates, new/sign/verify, in-toto compatibility, and what `layout check` catches."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from modelseal.cli import main
from modelseal.errors import UsageError, VerificationError
from modelseal.intoto_layout.authoring import TEMPLATES, load_template, new_layout, sign_layout
from modelseal.intoto_layout.lint import check_layout
from modelseal.intoto_layout.model import load_functionary_key, payload_of, verify_layout
from pipeline_fixtures import FUNCTIONARY, STEPS, make_functionaries


@pytest.fixture
def fs(tmp_path: Path) -> dict[str, Any]:
    return make_functionaries(tmp_path, [*FUNCTIONARY.values(), "owner", "approver2"])


def filled(fs: dict[str, Any], template: str = "ml-pipeline", **kw: Any) -> dict[str, Any]:
    pairs = [(s, fs[FUNCTIONARY[s]].public) for s in STEPS]
    if template == "ml-pipeline-hsm":
        pairs.append(("approve", fs["approver2"].public))
    return new_layout(load_template(template), pairs, **kw)


def codes(doc: dict[str, Any], **kw: Any) -> list[str]:
    return [f.code for f in check_layout(doc, **kw).findings]


@pytest.mark.parametrize("template", TEMPLATES)
def test_templates_filled_in_pass_the_check(fs: dict[str, Any], template: str) -> None:
    doc = filled(fs, template)
    assert check_layout(doc).ok, check_layout(doc).to_dict()
    assert [s["name"] for s in doc["steps"]] == list(STEPS)


def test_every_template_rule_list_ends_with_disallow_after_match() -> None:
    for t in TEMPLATES:
        doc = load_template(t)
        assert "match-without-disallow" not in codes(doc), t


def test_new_layout_refuses_a_step_without_enough_keys(fs: dict[str, Any]) -> None:
    with pytest.raises(UsageError, match="step 'package' needs 1"):
        new_layout(load_template("ml-pipeline"),
                   [(s, fs[FUNCTIONARY[s]].public) for s in STEPS[:-1]])
    with pytest.raises(UsageError, match="no step 'deploy'"):
        new_layout(load_template("ml-pipeline"), [("deploy", fs["owner"].public)])


def test_signed_layout_verifies_with_owner_key_only(fs: dict[str, Any]) -> None:
    signed = json.dumps(sign_layout(filled(fs), fs["owner"].signer)).encode()
    owner = fs["owner"].public
    tl = verify_layout(signed, {owner.keyid: owner})
    assert tl.final_step == "package"
    assert ("train", "approve") in tl.separation_of_duties
    other = fs["trainer"].public
    with pytest.raises(VerificationError, match=other.keyid[:16]):
        verify_layout(signed, {other.keyid: other})
    with pytest.raises(VerificationError, match=other.keyid[:16]):  # every key must sign
        verify_layout(signed, {owner.keyid: owner, other.keyid: other})


def test_tampered_layout_payload_is_refused(fs: dict[str, Any]) -> None:
    import base64

    env = sign_layout(filled(fs), fs["owner"].signer)
    doc = payload_of(env)
    doc["steps"][3]["pubkeys"].append(fs["trainer"].public.keyid)
    env["payload"] = base64.b64encode(json.dumps(doc).encode()).decode()
    owner = fs["owner"].public
    with pytest.raises(VerificationError, match="did not sign"):
        verify_layout(json.dumps(env).encode(), {owner.keyid: owner})


def test_in_toto_reads_and_verifies_our_signed_layout(fs: dict[str, Any]) -> None:
    from in_toto.models.metadata import Metadata
    from in_toto.verifylib import verify_metadata_signatures

    env = sign_layout(filled(fs), fs["owner"].signer)
    md = Metadata.from_dict(copy.deepcopy(env))
    owner = fs["owner"].public
    verify_metadata_signatures(md, {owner.keyid: {**owner.to_dict(), "keyid": owner.keyid}})
    assert [s.name for s in md.get_payload().steps] == list(STEPS)


def test_second_signature_is_added(fs: dict[str, Any]) -> None:
    env = sign_layout(filled(fs), fs["owner"].signer)
    env2 = sign_layout(env, fs["approver"].signer)
    assert len(env2["signatures"]) == 2
    keys = {f.public.keyid: f.public for f in (fs["owner"], fs["approver"])}
    verify_layout(json.dumps(env2).encode(), keys)


def test_keyless_functionaries_are_sigstore_keys(fs: dict[str, Any]) -> None:
    wf = "https://github.com/acme/models/.github/workflows/{}.yml@refs/heads/main"
    pairs = [(s, load_functionary_key(f"sigstore:{wf.format(s)}")) for s in STEPS
             if s != "approve"]
    pairs.append(("approve", fs["approver"].public))
    doc = new_layout(load_template("ml-pipeline-keyless"), pairs)
    kinds = sorted(k["keytype"] for k in doc["keys"].values())
    assert kinds.count("sigstore-oidc") == 4
    key = next(k for k in doc["keys"].values() if k["keytype"] == "sigstore-oidc")
    assert key["keyval"]["issuer"] == "https://token.actions.githubusercontent.com"
    assert check_layout(doc).ok


# ---- what `layout check` catches ------------------------------------------------------------


def test_check_catches_match_without_disallow(fs: dict[str, Any]) -> None:
    doc = filled(fs)
    doc["steps"][1]["expected_materials"] = [
        ["MATCH", "data/*", "WITH", "PRODUCTS", "FROM", "prepare-data"], ["ALLOW", "*"]]
    rep = check_layout(doc)
    assert not rep.ok
    f = next(f for f in rep.findings if f.code == "match-without-disallow")
    assert f.step == "train" and "DISALLOW" in f.message


def test_check_catches_expired_and_soon_to_expire(fs: dict[str, Any]) -> None:
    now = datetime.now(UTC)
    expired = filled(fs, expires=now + timedelta(days=1))
    expired["expires"] = "2020-01-01T00:00:00Z"
    assert "expired" in codes(expired)
    soon = filled(fs, expires=now + timedelta(days=5))
    assert "expires-soon" in codes(soon) and check_layout(soon).ok  # a warning only
    assert "expires-soon" not in codes(filled(fs, expires=now + timedelta(days=90)))


def test_check_catches_threshold_above_keys(fs: dict[str, Any]) -> None:
    doc = filled(fs)
    doc["steps"][3]["threshold"] = 2
    rep = check_layout(doc)
    assert not rep.ok and "threshold-above-keys" in codes(doc)
    assert "step approve: threshold 2" in rep.findings[0].message


def test_check_catches_key_allowed_for_separated_steps(fs: dict[str, Any]) -> None:
    trainer = fs["trainer"].public
    doc = new_layout(load_template("ml-pipeline"),
                     [(s, fs[FUNCTIONARY[s]].public) for s in STEPS] + [("approve", trainer)])
    rep = check_layout(doc)
    f = next(f for f in rep.findings if f.code == "separation-of-duties")
    assert trainer.keyid[:16] in f.message and "train and approve" in f.message
    # pairs can also be given on the command line
    doc["modelseal"]["separation_of_duties"] = []
    assert "separation-of-duties" not in codes(doc)
    assert "separation-of-duties" in codes(doc, separate=[("train", "approve")])


def test_check_catches_products_nothing_consumes(fs: dict[str, Any]) -> None:
    doc = filled(fs)
    # evaluate's report is no longer matched by approve
    doc["steps"][3]["expected_materials"] = [
        ["MATCH", "model/*", "WITH", "PRODUCTS", "FROM", "train"], ["DISALLOW", "*"]]
    rep = check_layout(doc)
    f = next(f for f in rep.findings if f.code == "unconsumed-products")
    assert f.step == "evaluate"


# ---- CLI ---------------------------------------------------------------------------------


def test_cli_layout_new_sign_check(fs: dict[str, Any], tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["layout", "new", "--template", "ml-pipeline", "-o", str(tmp_path / "l.json")]
    for s in STEPS:
        args += ["--functionary", f"{s}={fs[FUNCTIONARY[s]].key_path.with_suffix('.pub')}"]
    res = runner.invoke(main, args)
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["layout", "sign", str(tmp_path / "l.json"), "--key",
                               str(fs["owner"].key_path.with_suffix(".key"))])
    assert res.exit_code == 0, res.output
    owner = fs["owner"].public
    verify_layout((tmp_path / "l.json").read_bytes(), {owner.keyid: owner})
    res = runner.invoke(main, ["layout", "check", str(tmp_path / "l.json"), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["ok"] is True
    res = runner.invoke(main, ["layout", "check", str(tmp_path / "l.json"), "--soon", "365d"])
    assert res.exit_code == 0 and "expires-soon" in res.output


def test_cli_layout_check_fails_on_errors(fs: dict[str, Any], tmp_path: Path) -> None:
    doc = filled(fs)
    doc["steps"][3]["threshold"] = 3
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    res = CliRunner().invoke(main, ["layout", "check", str(tmp_path / "bad.json")])
    assert res.exit_code == 1 and "threshold-above-keys" in res.output


def test_cli_layout_new_usage_errors(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["layout", "new", "--template", "nope"])
    assert res.exit_code == 2 and "no layout template" in res.output
    res = CliRunner().invoke(main, ["layout", "new", "--template", "ml-pipeline",
                                    "--functionary", "train"])
    assert res.exit_code == 2 and "STEP=KEY" in res.output


def test_layout_new_lists_one_key_once_whatever_its_spelling(fs: dict[str, Any]) -> None:
    """The trainer's key given again under another key id (a key file may claim any id) is
    the same functionary: listed once, so it cannot count twice towards a threshold."""
    from modelseal.intoto_layout.model import key_dict, key_from_dict, key_identity

    trainer = fs["trainer"].public
    d = key_dict(trainer)
    alias = key_from_dict("ab" * 32, {k: v for k, v in d.items() if k != "keyid"})
    pairs = [(s, fs[FUNCTIONARY[s]].public) for s in STEPS] + [("train", alias)]
    doc = new_layout(load_template("ml-pipeline"), pairs)
    train = next(s for s in doc["steps"] if s["name"] == "train")
    assert train["pubkeys"] == [trainer.keyid] and "ab" * 32 not in doc["keys"]
    assert key_identity(d) == key_identity(alias.to_dict())
    with pytest.raises(UsageError):
        new_layout(load_template("ml-pipeline"), pairs, thresholds={"train": 2})


def test_key_identity_is_the_key_material_not_its_encoding_or_id() -> None:
    """ed25519 as raw hex and as PEM, EC as uncompressed and compressed point: one identity
    each; a keyless identity is its issuer and subject; other material never merges."""
    import base64

    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    from modelseal.intoto_layout.model import key_identity

    ed = ed25519.Ed25519PrivateKey.generate().public_key()
    raw = ed.public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw).hex()
    pem = ed.public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo).decode()
    as_hex = {"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": raw}}
    as_pem = {"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": pem}}
    assert key_identity(as_hex) == key_identity(as_pem)
    e = ec.generate_private_key(ec.SECP256R1()).public_key()
    full = e.public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo).decode()
    point = e.public_bytes(ser.Encoding.X962, ser.PublicFormat.CompressedPoint)
    der = bytes.fromhex("3039301306072a8648ce3d020106082a8648ce3d030107032200") + point
    short = ("-----BEGIN PUBLIC KEY-----\n" + base64.b64encode(der).decode()
             + "\n-----END PUBLIC KEY-----\n")
    a = {"keytype": "ecdsa", "scheme": "ecdsa-sha2-nistp256", "keyval": {"public": full}}
    b = {"keytype": "ecdsa", "scheme": "ecdsa-sha2-nistp384", "keyval": {"public": short}}
    assert key_identity(a) == key_identity(b) != key_identity(as_pem)
    ci = {"keytype": "sigstore-oidc", "scheme": "Fulcio",
          "keyval": {"identity": "x@example.com", "issuer": "https://issuer.example"}}
    assert key_identity(ci) == key_identity(copy.deepcopy(ci))
    assert key_identity(ci) != key_identity({**ci, "keyval": {**ci["keyval"], "issuer": "o"}})
    junk = {"keytype": "ecdsa", "scheme": "x", "keyval": {"public": "not a key"}}
    assert key_identity(junk).startswith("unparsed:") and key_identity(junk) != key_identity(a)


def test_new_layout_puts_release_managers_in_the_lifecycle_section(tmp_path: Path) -> None:
    """Transitions (promote:STAGE, deprecate, retire) are filled like steps, into the
    extension's lifecycle section; a transition nobody may sign is left out; production
    needs two release managers (the template's threshold)."""
    from modelseal.verify.lifecycle_records import rules_from_layout

    fs = make_functionaries(tmp_path, [*FUNCTIONARY.values(), "owner", "rm1", "rm2"])
    pairs = [(s, fs[FUNCTIONARY[s]].public) for s in STEPS]
    assert "lifecycle" not in new_layout(load_template("ml-pipeline"), pairs)["modelseal"]
    doc = new_layout(load_template("ml-pipeline"),
                     [*pairs, ("promote:production", fs["rm1"].public),
                      ("promote:production", fs["rm2"].public), ("retire", fs["rm1"].public)])
    section = doc["modelseal"]["lifecycle"]
    assert sorted(section) == ["promote:production", "retire"]
    assert section["promote:production"]["threshold"] == 2
    assert section["promote:production"]["distinct_from"] == ["train"]
    rules = rules_from_layout(verify_layout(
        json.dumps(sign_layout(doc, fs["owner"].signer)).encode(),
        {fs["owner"].public.keyid: fs["owner"].public}))
    assert sorted(rules.transitions) == ["promote:production", "retire"]
    with pytest.raises(UsageError, match="promote:production"):
        new_layout(load_template("ml-pipeline"),
                   [*pairs, ("promote:production", fs["rm1"].public)])
    with pytest.raises(UsageError, match="no step 'promote'"):
        new_layout(load_template("ml-pipeline"), [*pairs, ("promote", fs["rm1"].public)])
