"""Verifying an honest pipeline end to end against a real registry (docker-registry)."""

from __future__ import annotations

from pathlib import Path

from modelseal.verify.pipeline import verify_model
from modelseal.verify.policy import load_policy
from pipeline_fixtures import STEPS, honest_pipeline
from registry_server import RegistryServer


def test_honest_pipeline_verifies(tmp_path: Path, registry: RegistryServer) -> None:
    p = honest_pipeline(tmp_path, registry.host)
    result = verify_model(p.store, p.ref, load_policy(p.policy_path))
    assert result.verified, result.to_dict()
    assert [s.name for s in result.steps] == list(STEPS)
    assert all(s.passed and len(s.signers) == 1 for s in result.steps)
    assert result.subject == p.digest

