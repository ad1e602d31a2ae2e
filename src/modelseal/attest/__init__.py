"""Attestations: in-toto Statements, signed in DSSE envelopes stored as Sigstore bundles.

- ``payload``: the typed Statement v1 and ResourceDescriptor (``from_dict``/``to_dict``);
- ``statement``: the builders of the Statements modelseal signs (link, SLSA provenance, test
  result) and the link -> in-toto ``Link`` conversion;
- ``predicates``: the typed predicates (link, provenance, test result, model safety, VSA,
  model_signing), each with ``from_dict``/``to_dict`` keeping unknown fields;
- ``dsse``: the one DSSE path (PAE, sign, verify, envelope JSON);
- ``signers``: securesystemslib signers from a URI or a PEM path, ``keygen``;
- ``bundle``: sign a Statement into a bundle, parse and verify bundles (offline);
- ``steps``: record a pipeline step (``modelseal run``);
- ``lifecycle``: the lifecycle predicate (a record per transition) and its record digest.

Importing this package is cheap: securesystemslib, sigstore and in-toto load on first use.
"""
