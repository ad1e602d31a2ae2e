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
    call to the real module, loaded the first time it is actually needed, so validation is
    unchanged (see benchmarks/README.md). An IRI check (``is_valid_syntax``, what jsonschema
    calls) does not even need it: it builds the one parser the real module would use.
    """
    name = "rfc3987_syntax"
    spec = None if name in sys.modules else importlib.util.find_spec(name)
    if spec is None:
        return
    # where the real module's grammar is (found now: the stand-in has no spec to look it up)
    where = list(spec.submodule_search_locations or [])
    stub = types.ModuleType(name)

    def real() -> Any:
        if sys.modules.get(name) is stub:
            del sys.modules[name]
        return importlib.import_module(name)

    parsers: dict[str, Any] = {}
    answers: dict[tuple[str, str], bool] = {}  # an Earley parse of a long IRI takes ~70 ms

    def is_valid_syntax(term: str, value: str) -> Any:
        # The real module compiles 39 grammars (1.3 s of `modelseal bom`) to then use one:
        # its ``syntax_parser``. Build that one parser alone, from the same grammar file with
        # the same start rules and parser, so every check answers as the real one does.
        if sys.modules.get(name) is not stub:
            return real().is_valid_syntax(term, value)
        if "p" not in parsers:
            from pathlib import Path

            from lark import Lark

            try:
                grammar = Path(where[0], "syntax_rfc3987.lark").read_text(encoding="utf-8")
            except (IndexError, OSError):  # laid out differently: the real module decides
                return real().is_valid_syntax(term, value)
            parsers["p"] = Lark(grammar, start=["iri", "iri_reference", "absolute_iri"],
                                parser="earley")
        if (term, value) not in answers:  # a BOM names each attestation URI twice
            from lark import exceptions

            if len(answers) >= 4096:  # bounded, for a long-lived process
                answers.clear()

            try:
                parsers["p"].parse(value, start=term)
                answers[term, value] = True
            except exceptions.LarkError:
                answers[term, value] = False
        return answers[term, value]

    def __getattr__(attr: str) -> Any:  # module-level __getattr__ (PEP 562)
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(real(), attr)

    stub.is_valid_syntax = is_valid_syntax  # type: ignore[attr-defined]
    stub.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules[name] = stub


_defer_rfc3987_syntax()
