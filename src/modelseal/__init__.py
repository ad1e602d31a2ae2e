"""modelseal: supply-chain attestations for machine-learning models."""

import importlib
import importlib.util
import sys
import types
from typing import Any


def _defer_rfc3987_syntax() -> None:
    """Load ``rfc3987_syntax`` on first use instead of at import.

    jsonschema (imported by oras-py, cyclonedx, our schema checks) imports it when installed,
    and it compiles 39 Lark grammars at import: 0.8 s on an idle 2-core machine, more than a
    whole ``modelseal push`` of an unchanged model. A stand-in in ``sys.modules`` hands every
    call to the real module, loaded the first time an IRI is actually checked, so validation
    is unchanged (see benchmarks/README.md).
    """
    name = "rfc3987_syntax"
    if name in sys.modules or importlib.util.find_spec(name) is None:
        return
    stub = types.ModuleType(name)

    def real() -> Any:
        if sys.modules.get(name) is stub:
            del sys.modules[name]
        return importlib.import_module(name)

    def is_valid_syntax(term: str, value: str) -> Any:
        return real().is_valid_syntax(term, value)

    def __getattr__(attr: str) -> Any:  # module-level __getattr__ (PEP 562)
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(real(), attr)

    stub.is_valid_syntax = is_valid_syntax  # type: ignore[attr-defined]
    stub.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules[name] = stub


_defer_rfc3987_syntax()
