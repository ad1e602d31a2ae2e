"""Writing the lifecycle section of a layout: who may sign which transition.

The verifier reads it back with ``verify.lifecycle_records.rules_from_layout``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from modelseal.verify.lifecycle_records import LIFECYCLE_EXTENSION


def add_lifecycle_rules(doc: dict[str, Any],
                        transitions: Mapping[str, tuple[Sequence[Any], int, Sequence[str]]]
                        ) -> dict[str, Any]:
    """Write the lifecycle section into an (unsigned) layout document: transition name ->
    (securesystemslib public keys, threshold, steps to stay distinct from). The keys join the
    layout's ``keys``; the layout owner signs the result as usual."""
    from modelseal.intoto_layout.model import EXTENSION, key_dict

    keys = doc.setdefault("keys", {})
    section: dict[str, Any] = {}
    for name, (pubs, threshold, distinct) in transitions.items():
        for k in pubs:
            keys[k.keyid] = key_dict(k)
        section[name] = {"pubkeys": [k.keyid for k in pubs], "threshold": threshold,
                         **({"distinct_from": list(distinct)} if distinct else {})}
    doc.setdefault(EXTENSION, {})[LIFECYCLE_EXTENSION] = section
    return doc
