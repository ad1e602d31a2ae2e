"""Every bound modelseal puts on outside input, in one place (docs/threat-model.md,
"Resource bounds").

Whoever can push to a registry can attach referrers to a model. These bounds keep such a
person from crashing or exhausting a verification: past a bound, the input is refused or
ignored with a reason that names the bound, and the verdict on the rest stands.
"""

from __future__ import annotations

MiB = 1024 * 1024

MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects accepted in any JSON document read from outside.
The deepest legitimate documents (Sigstore bundles, CycloneDX BOMs) nest about 10 levels."""

MAX_JSON_BYTES = 16 * MiB
"""Largest JSON document read from outside (manifests, indexes, layouts, policies)."""

MAX_ATTESTATION_BYTES = 4 * MiB
"""An attestation blob (a Sigstore bundle) must be smaller than this. A bundle is a few KiB; a
BOM inside one a few hundred. Larger blobs are refused from the descriptor's size when it is
known, and their download is cut at the first read chunk that reaches the bound when it is
not."""

MAX_EVIDENCE_BYTES = 32 * MiB
"""Total attestation bytes fetched for one verification; referrers past it are ignored."""

PER_FILE_ATTESTATION_BYTES = 512
"""What one file of the model may add to the two bounds above. A link of a step lists every
file (about 250 bytes each, 350 base64-encoded in the bundle), so a 100,000-file model has
honest attestations of tens of MiB. The bounds grow with the model's file count, which the
verified manifest fixes (an attacker cannot raise it without changing the model), and stop
at ``MAX_BUNDLE_BYTES``."""

MAX_BUNDLE_BYTES = 64 * MiB
"""Hard ceiling on one bundle, whatever the model: no attestation of any model is read past
it (``attest.bundle.parse_bundle``)."""


def attestation_bound(files: int) -> int:
    """The largest attestation blob accepted for a model of ``files`` files."""
    return min(MAX_BUNDLE_BYTES, MAX_ATTESTATION_BYTES + PER_FILE_ATTESTATION_BYTES * files)

MAX_REFERRERS = 1024
"""Referrers fetched for one verification; those past it are ignored (and named)."""

MAX_SIGNATURES_PER_ENVELOPE = 16
"""Signatures one DSSE envelope may carry; an envelope with more is refused unread."""

MAX_METADATA_BYTES = 1 * MiB
"""Largest metadata (YAML/JSON) or policy file read."""

MAX_VALUE_NODES = 100_000
"""Most values (strings, numbers, lists, mappings) in a metadata or policy file once
YAML aliases are expanded: a few KiB of aliases can otherwise stand for gigabytes."""
