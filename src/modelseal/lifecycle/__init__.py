"""Lifecycle of a published model, the write side and local state: promotion, deprecation,
retirement and corrections as a chain of signed records (docs/lifecycle.md).

- ``service``: sign and attach transitions, read a model's history (I/O);
- ``state``: what a verifier remembers per model (``--state``);
- ``layout``: write the layout's lifecycle section (who may sign which transition).

The record itself is ``attest.lifecycle``; judging it is the verifier's
(``verify.lifecycle_chain``, ``verify.lifecycle_records``, ``verify.lifecycle_requirement``).
"""
