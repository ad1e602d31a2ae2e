"""RFC 3161 timestamps against a real TSA (OpenSSL ``ts -reply`` on 127.0.0.1)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from modelseal.attest.bundle import parse_bundle, sign_statement, verify_bundle
from modelseal.attest.signers import keygen, load_signer
from modelseal.attest.statement import statement
from modelseal.attest.tsa import (
    TSAClient,
    load_tsa_certificates,
    tsa_url,
    verified_times_of_bundle,
    verify_timestamp,
)
from modelseal.errors import InputError, SigningError, UsageError
from tsa_server import TSAServer, tsa

__all__ = ["tsa"]  # the fixture


def _signed(tmp_path: Path, client: TSAClient | None) -> tuple[bytes, object]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    keygen(tmp_path / "k")
    signer = load_signer(str(tmp_path / "k.key"))
    st = statement([("model", "ab" * 32)], "https://example.com/p/v1", {"x": 1})
    return sign_statement(st, signer, client), signer


def test_timestamp_lands_in_bundle_and_verifies_under_trusted_tsa(tmp_path: Path,
                                                                 tsa: TSAServer) -> None:
    before = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=2)
    bundle, signer = _signed(tmp_path, TSAClient(tsa.url))
    raw = json.loads(bundle)
    stamps = raw["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"]
    assert len(stamps) == 1 and base64.b64decode(stamps[0]["signedTimestamp"])
    # the DSSE envelope is untouched: the bundle still verifies with the key
    key = signer.public_key  # type: ignore[attr-defined]
    assert verify_bundle(bundle, keys={key.keyid: key}).keyid == key.keyid
    check = verified_times_of_bundle(bundle, load_tsa_certificates([tsa.ca_file]))
    assert not check.refused and check.earliest is not None
    assert before <= check.earliest.time <= datetime.now(UTC) + timedelta(seconds=2)
    assert check.earliest.tsa == "CN=modelseal test TSA"
    assert tsa.requests == 1


def test_timestamp_of_untrusted_tsa_gives_no_time(tmp_path: Path, tsa: TSAServer) -> None:
    bundle, _ = _signed(tmp_path, TSAClient(tsa.url))
    other = TSAServer(tmp_path / "other-tsa", "someone else's TSA")  # never started
    check = verified_times_of_bundle(bundle, load_tsa_certificates([other.ca_file]))
    assert check.times == [] and len(check.refused) == 1


def test_timestamp_moved_to_another_signature_refused(tmp_path: Path, tsa: TSAServer) -> None:
    """A timestamp copied from one bundle into another does not date the other signature."""
    stamped, _ = _signed(tmp_path / "a", TSAClient(tsa.url))
    plain, _ = _signed(tmp_path / "b", None)
    raw = json.loads(plain)
    raw["verificationMaterial"]["timestampVerificationData"] = json.loads(stamped)[
        "verificationMaterial"]["timestampVerificationData"]
    check = verified_times_of_bundle(json.dumps(raw).encode(),
                                     load_tsa_certificates([tsa.ca_file]))
    assert check.times == [] and check.refused


def test_garbage_timestamp_is_refused_not_a_crash(tmp_path: Path, tsa: TSAServer) -> None:
    roots = load_tsa_certificates([tsa.ca_file])
    with pytest.raises(InputError):
        verify_timestamp(b"\x30\x03\x02\x01\x00", b"sig", roots)
    plain, _ = _signed(tmp_path, None)
    raw = json.loads(plain)
    raw["verificationMaterial"]["timestampVerificationData"] = {
        "rfc3161Timestamps": [{"signedTimestamp": "bm90IGRlcg=="}] * 50}
    check = verified_times_of_bundle(json.dumps(raw).encode(), roots)
    assert check.times == [] and len(check.refused) == 8  # bounded


def test_keyless_style_bundle_without_timestamps_has_no_time(tmp_path: Path,
                                                             tsa: TSAServer) -> None:
    plain, _ = _signed(tmp_path, None)
    check = verified_times_of_bundle(plain, load_tsa_certificates([tsa.ca_file]))
    assert check.times == [] and check.refused == []
    assert parse_bundle(plain).raw["verificationMaterial"].get(
        "timestampVerificationData") is None


def test_tsa_refusing_or_unreachable_is_a_signing_error(tmp_path: Path, tsa: TSAServer) -> None:
    tsa.fail_with = 500
    with pytest.raises(SigningError):
        _signed(tmp_path / "a", TSAClient(tsa.url))
    with pytest.raises(SigningError):
        _signed(tmp_path / "b", TSAClient("http://127.0.0.1:9/tsr", timeout=2))


def test_tsa_url_from_option_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELSEAL_TSA", raising=False)
    assert tsa_url(None) is None
    monkeypatch.setenv("MODELSEAL_TSA", "http://127.0.0.1:1/tsr")
    assert tsa_url(None) == "http://127.0.0.1:1/tsr"
    assert tsa_url("https://tsa.example/") == "https://tsa.example/"
    with pytest.raises(UsageError):
        tsa_url("ftp://tsa.example/")


def test_every_signing_command_takes_tsa_option_and_environment(tmp_path: Path,
                                                                 tsa: TSAServer,
                                                                 monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    """``--tsa`` (or MODELSEAL_TSA) on a signing command countersigns what it signs; outside
    the command nothing is timestamped any more."""
    from click.testing import CliRunner

    from modelseal.attest.tsa import ambient_tsa
    from modelseal.cli import main

    keygen(tmp_path / "k")
    (tmp_path / "w.bin").write_bytes(b"weights")
    (tmp_path / "p.json").write_text('{"ok": true}')
    roots = load_tsa_certificates([tsa.ca_file])
    for how in ("option", "env"):
        out = tmp_path / f"{how}.sigstore.json"
        args = ["attest", "--signer", str(tmp_path / "k.key"), "--subject",
                str(tmp_path / "w.bin"), "--predicate-type", "https://example.com/p/v1",
                "--predicate", str(tmp_path / "p.json"), "--output", str(out)]
        if how == "option":
            args[1:1] = ["--tsa", tsa.url]
        else:
            monkeypatch.setenv("MODELSEAL_TSA", tsa.url)
        res = CliRunner().invoke(main, args, catch_exceptions=False)
        assert res.exit_code == 0, res.output
        check = verified_times_of_bundle(out.read_bytes(), roots)
        assert check.earliest is not None and not check.refused
        assert ambient_tsa() is None
    assert tsa.requests == 2
    for cmd in ("run", "push", "bom", "scan", "verify", "promote"):
        res = CliRunner().invoke(main, [cmd, "--help"])
        assert "--tsa" in res.output, cmd
