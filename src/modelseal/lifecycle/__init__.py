"""Lifecycle of a published model: promotion, deprecation, retirement and corrections as a
chain of signed records (docs/lifecycle.md).

- ``predicate``: the lifecycle predicate (to_dict/from_dict) and the record digest;
- ``chain``: the pure decision (who approved which record, the chain, stage, refusals);
- ``evidence``: bundles verified against the layout's keys and trusted TSA certificates;
- ``state``: what a verifier remembers per model (``--state``);
- ``requirement``: the adapter to the verifier's policy requirements;
- ``service``: sign and attach transitions, read a model's history (I/O).
"""
