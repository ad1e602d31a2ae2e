"""Verifying a model against a policy before rollout (DESIGN.md section 3).

- ``policy``: the deployer's YAML policy, compiled into requirements;
- ``requirements``: what a policy requires beyond the layout, checked over the decision's facts;
- ``decision``: the pure security decision, a ``Verifier`` given its trust material and fed
  evidence (no I/O);
- ``evidence``: fetching the layout and the attestations, bounded;
- ``pipeline``: fetch, then decide (and the verification summary);
- ``result``: what was decided, per step, with every refusal's cause (``to_dict``/``from_dict``);
- ``lifecycle_chain``, ``lifecycle_records``, ``lifecycle_requirement``: the lifecycle verdict
  (the chain of signed records, who may sign them, the policy's stage requirements).
"""

from __future__ import annotations

import importlib

# name -> submodule; loaded on first use, so that importing one submodule does not import
# the whole package (the decision must not pull in the fetching half)
_EXPORTS = {"Evidence": "decision", "ModelView": "decision", "Verifier": "decision",
            "Policy": "policy", "compile_policy": "policy", "load_policy": "policy",
            "Refusal": "result", "StepOutcome": "result", "VerificationResult": "result",
            "fetch_evidence": "evidence",
            "verify_model": "pipeline", "pull_verified": "pipeline",
            "verify_and_resolve": "pipeline"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(name)
    return getattr(importlib.import_module(f"modelseal.verify.{module}"), name)
