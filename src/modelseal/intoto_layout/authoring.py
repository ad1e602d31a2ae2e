"""in-toto layouts, authoring: templates, ``layout new`` (a template with its functionaries
filled in) and signing a layout (``layout sign``), which refuses what ``layout check`` rejects.

Nothing here touches the network; the only file read is a template (``load_template``)."""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelseal._util.json import canonical_json
from modelseal._util.time import rfc3339
from modelseal.errors import InputError, UsageError
from modelseal.formats import IN_TOTO_PAYLOAD_TYPE, LIFECYCLE_ACTIONS
from modelseal.intoto_layout.lint import check_layout
from modelseal.intoto_layout.model import (
    EXTENSION,
    key_dict,
    key_identity,
    payload_of,
    to_in_toto,
)

if TYPE_CHECKING:
    from securesystemslib.signer import Key, Signer

TEMPLATES = ("ml-pipeline", "ml-pipeline-keyless", "ml-pipeline-hsm")
DEFAULT_VALIDITY = timedelta(days=180)


def templates_dirs() -> list[Path]:
    """Where templates are looked up: the repository's ``layouts/``, then package data."""
    out = [Path(__file__).resolve().parents[3] / "layouts"]
    with contextlib.suppress(ModuleNotFoundError, TypeError):
        out.append(Path(str(resources.files("modelseal") / "data" / "layouts")))
    return out


def load_template(name_or_path: str) -> dict[str, Any]:
    """A template by name (``ml-pipeline``...) or path; the unsigned layout document."""
    path = Path(name_or_path)
    if not path.is_file():
        for d in templates_dirs():
            cand = d / f"{name_or_path}.json"
            if cand.is_file():
                path = cand
                break
        else:
            raise UsageError(f"no layout template {name_or_path!r}",
                             hint="templates: " + ", ".join(TEMPLATES))
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise InputError(f"layout template {path} cannot be read: {e}") from e
    return payload_of(doc) if ("payload" in doc or "signed" in doc) else doc


def parse_functionaries(specs: Iterable[str]) -> list[tuple[str, str]]:
    """``STEP=KEY`` pairs from the command line, in order."""
    out = []
    for s in specs:
        step, sep, key = s.partition("=")
        if not sep or not step or not key:
            raise UsageError(f"functionary {s!r}: write STEP=KEY")
        out.append((step.strip(), key.strip()))
    return out


def new_layout(template: Mapping[str, Any], functionaries: Sequence[tuple[str, Key]], *,
               expires: datetime | None = None, now: datetime | None = None,
               thresholds: Mapping[str, int] | None = None,
               readme: str | None = None,
               names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A layout document from a template, with each step's functionary keys filled in.

    Every step must end up with at least ``threshold`` keys; in-toto's own validation runs
    on the result. The same key material given twice (under another key id, in another
    encoding) is one functionary: it is listed once. ``names`` (keyid -> functionary name)
    go into the extension's ``functionaries`` so that refusals name people, not key ids.
    """
    doc = copy.deepcopy(dict(template))
    steps = {s["name"]: s for s in doc.get("steps") or []}
    keys: dict[str, Any] = dict(doc.get("keys") or {})
    by_identity = {key_identity(d): kid for kid, d in keys.items() if isinstance(d, Mapping)}
    ext = doc.setdefault(EXTENSION, {})
    known = dict(ext.get("functionaries") or {}) if isinstance(ext, dict) else {}
    # lifecycle transitions (promote:STAGE, deprecate, retire, correct: docs/lifecycle.md) are
    # signed like steps but live in the extension: no link is ever expected for them
    lifecycle = ext.setdefault("lifecycle", {}) if isinstance(ext, dict) else {}

    def slot(name: str) -> dict[str, Any] | None:
        action = name.partition(":")[0]
        if action in LIFECYCLE_ACTIONS and (action == "promote") == (":" in name):
            return lifecycle.setdefault(name, {"pubkeys": [], "threshold": 1})  # type: ignore[no-any-return]
        return None

    for step, key in functionaries:
        target = steps.get(step) or slot(step)
        if target is None:
            raise UsageError(f"the template has no step {step!r}",
                             hint="its steps: " + ", ".join(steps) + "; lifecycle "
                             "transitions: promote:STAGE, deprecate, retire, correct")
        d = key_dict(key)
        kid = by_identity.setdefault(key_identity(d), key.keyid)
        keys.setdefault(kid, d if kid == key.keyid else keys[kid])
        if names and names.get(key.keyid):
            known.setdefault(kid, names[key.keyid])
        if kid not in target["pubkeys"]:
            target["pubkeys"].append(kid)
    if known and isinstance(ext, dict):
        ext["functionaries"] = known
    for step, n in (thresholds or {}).items():
        target = steps.get(step) or (lifecycle.get(step) if step in lifecycle else None)
        if target is None:
            raise UsageError(f"threshold for unknown step {step!r}")
        target["threshold"] = int(n)
    for name in [n for n, t in lifecycle.items() if not t.get("pubkeys")]:
        del lifecycle[name]  # a transition nobody may sign is not offered
    if isinstance(ext, dict) and not lifecycle:
        ext.pop("lifecycle", None)
    for s in [*steps.values(), *({"name": n, **t} for n, t in lifecycle.items())]:
        if len(s["pubkeys"]) < int(s.get("threshold", 1)):
            raise UsageError(
                f"step {s['name']!r} needs {s.get('threshold', 1)} functionary key(s), "
                f"{len(s['pubkeys'])} given",
                hint=f"add --functionary {s['name']}=KEY")
    doc["keys"] = keys
    now = now or datetime.now(UTC)
    if expires is not None and expires <= now:
        raise UsageError(f"the layout would expire at {rfc3339(expires)}, which is not in the "
                         "future", hint="give a positive validity, e.g. --expires 90d")
    doc["expires"] = rfc3339(expires or now + DEFAULT_VALIDITY)
    if readme is not None:
        doc["readme"] = readme
    to_in_toto(doc)  # in-toto's validation
    return doc


def sign_layout(doc_or_signed: Mapping[str, Any], signer: Signer) -> dict[str, Any]:
    """Sign a layout document (or add a signature to a signed one): the DSSE envelope dict."""
    from modelseal.attest.dsse import Envelope

    if "payload" in doc_or_signed:
        env = Envelope.from_dict(dict(doc_or_signed), what="the layout envelope")
        try:
            doc = json.loads(env.payload)
        except ValueError as e:
            raise InputError(f"the layout envelope cannot be read: {e}") from e
    else:
        doc = payload_of(doc_or_signed) if "signed" in doc_or_signed else dict(doc_or_signed)
        env = Envelope(canonical_json(doc), IN_TOTO_PAYLOAD_TYPE)
    if not isinstance(doc, dict):
        raise InputError("the layout is not a JSON object")
    to_in_toto(doc)
    # what ``layout check`` rejects is never signed: a signature is the owner's approval
    errors = [f for f in check_layout(doc).findings if f.level == "error"]
    if errors:
        raise UsageError("the layout has errors and was not signed: "
                         + "; ".join(f"[{f.code}] {f.message}" for f in errors),
                         hint="run `modelseal layout check` and fix them")
    env.sign(signer, what="layout")
    return env.to_dict()
