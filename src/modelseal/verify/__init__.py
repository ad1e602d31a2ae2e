"""Verifying a model against a policy before rollout (DESIGN.md section 3).

- ``policy``: the deployer's YAML policy, compiled into requirement objects;
- ``decision``: the pure security decision, fed bytes;
- ``pipeline``: fetching (manifest, referrers, layout) and the verification summary;
- ``result``: what was decided, per step, with every refusal's cause.
"""

from __future__ import annotations

import importlib

# name -> submodule; loaded on first use, so that importing one submodule (the lifecycle
# requirement imports ``verify.result``) does not import the whole package
_EXPORTS = {"Evidence": "decision", "ModelView": "decision", "decide": "decision",
            "Policy": "policy", "compile_policy": "policy", "load_policy": "policy",
            "Refusal": "result", "StepOutcome": "result", "VerificationResult": "result",
            "verify_model": "pipeline", "pull_verified": "pipeline",
            "verify_and_resolve": "pipeline"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(name)
    return getattr(importlib.import_module(f"modelseal.verify.{module}"), name)
