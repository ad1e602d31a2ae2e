"""Verifying a model against a policy before rollout (DESIGN.md section 3).

- ``policy``: the deployer's YAML policy, compiled into requirement objects;
- ``decision``: the pure security decision, fed bytes;
- ``pipeline``: fetching (manifest, referrers, layout) and the verification summary;
- ``result``: what was decided, per step, with every refusal's cause.
"""

from __future__ import annotations

from modelseal.verify.decision import Evidence, ModelView, decide
from modelseal.verify.policy import Policy, compile_policy, load_policy
from modelseal.verify.result import Refusal, StepOutcome, VerificationResult

__all__ = ["Evidence", "ModelView", "Policy", "Refusal", "StepOutcome", "VerificationResult",
           "compile_policy", "decide", "load_policy", "pull_verified", "verify_model"]


def __getattr__(name: str) -> object:
    # the pipeline imports the store machinery: load it only when asked for
    if name in ("verify_model", "pull_verified", "verify_and_resolve"):
        from modelseal.verify import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
