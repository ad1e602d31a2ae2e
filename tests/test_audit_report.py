"""The auditor's HTML report, rendered by a real browser (Debian's headless Chromium).

The report is built from the honest pipeline on a real registry; Chromium loads the file with
the network off for the page (a Content-Security-Policy allows nothing external), takes a
screenshot, and dumps the DOM it built: the test reads the model name, each step, the verdict
and the graph from what the browser parsed, not from our string.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import zlib
from html.parser import HTMLParser
from pathlib import Path

from modelseal.audit.html import render_html
from modelseal.audit.report import build_report
from modelseal.verify.policy import load_policy
from pipeline_fixtures import STEPS, honest_pipeline
from registry_server import RegistryServer

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        from paths import missing_tool

        missing_tool("chromium")
    assert exe is not None
    return exe


def _browser(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / "chromium-profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run([_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120, check=False)


class _Dom(HTMLParser):
    """What the test needs from the DOM Chromium dumped."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: dict[str, str] = {}
        self.steps: list[str] = []
        self.nodes: list[str] = []
        self.edges = 0
        self.external: list[str] = []
        self._capture: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self._capture = a["id"]
            self.ids.setdefault(str(a["id"]), "")
        if a.get("data-step"):
            self.steps.append(str(a["data-step"]))
        if a.get("data-node"):
            self.nodes.append(str(a["data-node"]))
        if tag == "path" and "edge" in (a.get("class") or ""):
            self.edges += 1
        for attr in ("src", "href"):
            if a.get(attr) and not str(a[attr]).startswith(("#", "data:")):
                self.external.append(str(a[attr]))
        if tag in ("script", "link", "img", "iframe"):
            self.external.append(tag)

    def handle_data(self, data: str) -> None:
        if self._capture:
            self.ids[self._capture] += data

    def handle_endtag(self, tag: str) -> None:
        self._capture = None


def _png_info(path: Path) -> tuple[int, int, int]:
    """(width, height, distinct byte values of the decoded pixel rows)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


def test_html_report_renders_in_chromium(tmp_path: Path, registry: RegistryServer) -> None:
    p = honest_pipeline(tmp_path, registry.host)
    report_file = tmp_path / "report.html"
    done = subprocess.run([sys.executable, "-m", "modelseal.cli", "audit", p.ref_text(),
                           "--policy", str(p.policy_path), "--html", str(report_file),
                           "--json"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["verdict"] == "VERIFIED" and [s["name"] for s in doc["steps"]] == list(STEPS)

    shot = tmp_path / "report.png"
    r = _browser(tmp_path, f"--screenshot={shot}", "--window-size=1280,2400",
                 report_file.as_uri())
    assert shot.exists(), r.stderr[-2000:]
    width, height, distinct = _png_info(shot)
    assert (width, height) == (1280, 2400) and distinct > 16  # drawn, not a blank page

    dumped = _browser(tmp_path, "--dump-dom", report_file.as_uri())
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = _Dom()
    dom.feed(dumped.stdout)
    assert dom.ids["model-name"].startswith("tiny")
    assert dom.ids["verdict-value"] == "VERIFIED"
    assert dom.steps == list(STEPS)
    assert "provenance-graph" in dom.ids
    assert {f"step:{s}" for s in STEPS} | {"model"} <= set(dom.nodes)
    assert any(n.startswith("input:") for n in dom.nodes)  # datasets and code
    assert dom.edges >= len(STEPS)
    assert dom.external == []  # self-contained


def test_refused_model_report_lists_every_reason(tmp_path: Path,
                                                 registry: RegistryServer) -> None:
    from modelseal.attest.signers import keygen

    p = honest_pipeline(tmp_path, registry.host)
    keygen(tmp_path / "stranger")
    policy = p.policy()
    policy.write_text(policy.read_text().replace(
        str(p.owner.key_path.with_suffix(".pub")), str(tmp_path / "stranger.pub")))
    report = build_report(p.store, p.ref, policy=load_policy(policy))
    assert report.verdict == "REFUSED"
    assert report.findings and report.findings[0]["severity"] == "refusal"
    html = render_html(report)
    dom = _Dom()
    dom.feed(html)
    assert dom.ids["verdict-value"] == "REFUSED"
    assert "reasons" in dom.ids


def test_report_escapes_hostile_attestation_text(tmp_path: Path,
                                                 registry: RegistryServer) -> None:
    from modelseal.attest.attachments import attach_bundle, subject_of
    from modelseal.attest.bundle import sign_statement
    from modelseal.attest.statement import link_statement

    p = honest_pipeline(tmp_path, registry.host)
    evil = link_statement("x<script>alert(1)</script>", ["<img src=x onerror=alert(1)>"],
                          [("raw/</text><script>", "00" * 32)], [("model", "11" * 32)])
    attach_bundle(p.store, subject_of(p.store, p.digest),
                  sign_statement(evil, p.functionaries["trainer"].signer))
    html = render_html(build_report(p.store, p.ref))
    dom = _Dom()
    dom.feed(html)
    assert dom.external == [] and "<script>" not in html and "<img" not in html


def test_attestations_download_names_files_by_step_predicate_and_signer(
        tmp_path: Path, registry: RegistryServer) -> None:
    from modelseal.attest.attachments import attach_bundle, subject_of
    from modelseal.attest.bundle import sign_statement
    from modelseal.attest.statement import statement

    p = honest_pipeline(tmp_path, registry.host)
    trainer = p.functionaries["trainer"]
    prov = statement([("weights.bin", "22" * 32)], "https://slsa.dev/provenance/v1",
                     {"buildDefinition": {}, "runDetails": {}})
    attach_bundle(p.store, subject_of(p.store, p.digest), sign_statement(prov, trainer.signer))
    out = tmp_path / "evidence"
    done = subprocess.run([sys.executable, "-m", "modelseal.cli", "attestations",
                           p.ref_text(), "--download", str(out), "--json"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)["attestations"]
    keyid8 = trainer.signer.public_key.keyid[:8]
    names = sorted(Path(a["path"]).name for a in listed)
    assert f"train.provenance.{keyid8}.sigstore.json" in names
    assert f"train.link.{keyid8}.sigstore.json" in names
    assert sorted(x.name for x in out.iterdir()) == names
    assert {a["step"] for a in listed} == set(STEPS)
    first = listed[0]
    for what in (first["digest"][:19], first["path"]):
        shown = subprocess.run([sys.executable, "-m", "modelseal.cli", "attestations", "show",
                                p.ref_text(), what, "--json"],
                               capture_output=True, text=True, check=False)
        assert shown.returncode == 0, shown.stderr
        doc = json.loads(shown.stdout)
        assert doc["predicateType"] == first["predicateType"]
        assert doc["keyless"] is False and doc["subject"]
    missing = subprocess.run([sys.executable, "-m", "modelseal.cli", "attestations", "show",
                              p.ref_text(), "sha256:0000"], capture_output=True, text=True,
                             check=False)
    assert missing.returncode == 3 and "Traceback" not in missing.stderr
