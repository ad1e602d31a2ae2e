"""Attestations: in-toto Statements, signed in DSSE envelopes stored as Sigstore bundles.

- ``statement``: Statement v1 and predicate builders (link, SLSA provenance, test result);
- ``signers``: securesystemslib signers from a URI or a PEM path, ``keygen``;
- ``bundle``: sign a Statement into a bundle, parse and verify bundles (offline);
- ``steps``: record a pipeline step (``modelseal run``);
- ``lifecycle``: the lifecycle predicate (a record per transition) and its record digest.

Importing this package is cheap: securesystemslib, sigstore and in-toto load on first use.
"""
