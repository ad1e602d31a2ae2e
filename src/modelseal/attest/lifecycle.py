"""modelseal's lifecycle predicate: one signed record per transition of a published model.

A published model and its metadata never change in place. Promotion, deprecation, retirement
and corrections are new in-toto Statements about the model's manifest digest, predicate type
``https://modelseal.dev/attestation/lifecycle/v1`` (schema: docs/lifecycle.schema.json). The
records of one model form a chain: ``sequence`` counts from 1 and ``previous`` is the digest of
the record before (``recordDigest`` below), so deleting or replaying a record is visible.

Several people approve one transition by signing the *same* Statement: a record's identity is
its digest, not who signed it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from modelseal._util.json import canonical_json
from modelseal.errors import InputError
from modelseal.formats import LIFECYCLE_ACTIONS, LIFECYCLE_PREDICATE

RETIRED = "retired"
STATUS_OF = {"promote": "active", "deprecate": "deprecated", "retire": "retired"}
_STAGE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_TEXT = 4096  # reason, ticket: enough for people, bounded for the verifier


def check_stage(stage: str) -> str:
    """A stage name: lower-case letters, digits and ``-``; ``retired`` only by retirement."""
    if not isinstance(stage, str) or not _STAGE.match(stage):
        raise InputError(f"stage {stage!r} is not a stage name (a-z, 0-9, '-', e.g. production)")
    return stage


def record_digest(statement: Mapping[str, Any]) -> str:
    """The identity of a record: sha256 of its Statement in canonical JSON (the bytes
    modelseal signs), so co-signatures of the same record share it."""
    return "sha256:" + hashlib.sha256(canonical_json(statement)).hexdigest()


def _opt_text(d: Mapping[str, Any], key: str) -> str | None:
    v = d.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or len(v) > MAX_TEXT:
        raise InputError(f"lifecycle record: {key} must be a string of at most {MAX_TEXT} "
                         "characters")
    return v


@dataclass(frozen=True)
class LifecycleRecord:
    """The predicate of one lifecycle Statement.

    ``stage`` is the model's stage *after* this record (a deprecation keeps the stage, a
    retirement sets ``retired``); ``time`` is what the signer claims (signed, but only a TSA
    timestamp makes it trusted time)."""

    PREDICATE_TYPES: ClassVar[tuple[str, ...]] = (LIFECYCLE_PREDICATE,)

    action: str
    stage: str
    model: str  # repository the model was released in, e.g. registry.example/models/x
    digest: str  # the model's manifest digest
    sequence: int
    previous: str | None
    time: str
    reason: str | None = None
    ticket: str | None = None
    tag: str | None = None  # the tag the model is released under (promotion)
    corrections: dict[str, Any] = field(default_factory=dict)  # action correct: field -> value
    unrecognized: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.action not in LIFECYCLE_ACTIONS:
            raise InputError(f"lifecycle record: action {self.action!r} is not one of "
                             + ", ".join(LIFECYCLE_ACTIONS))
        check_stage(self.stage)
        if (self.stage == RETIRED) != (self.action == "retire") and self.action != "correct":
            raise InputError("lifecycle record: stage 'retired' is set by retirement only")
        if not _DIGEST.match(self.digest):
            raise InputError(f"lifecycle record: digest {self.digest!r} is not sha256:HEX")
        if isinstance(self.sequence, bool) or not isinstance(self.sequence, int) \
                or self.sequence < 1:
            raise InputError("lifecycle record: sequence must be an integer >= 1")
        if (self.sequence == 1) != (self.previous is None):
            raise InputError("lifecycle record: the first record (sequence 1) and only it has "
                             "no previous record")
        if self.previous is not None and not _DIGEST.match(self.previous):
            raise InputError(f"lifecycle record: previous {self.previous!r} is not sha256:HEX")
        if self.claimed_time() is None:
            raise InputError(f"lifecycle record: time {self.time!r} is not an RFC 3339 time")
        if self.action == "correct" and not self.corrections:
            raise InputError("lifecycle record: a correction must say what it corrects")
        if self.action == "retire" and not self.reason:
            raise InputError("lifecycle record: a retirement needs a reason")

    @property
    def status(self) -> str | None:
        """active, deprecated or retired; None for a correction (it changes no state)."""
        return STATUS_OF.get(self.action)

    def claimed_time(self) -> datetime | None:
        from modelseal._util.time import parse_time

        try:
            return parse_time(self.time)
        except InputError:
            return None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "action": self.action, "stage": self.stage,
            "model": {"name": self.model, "digest": self.digest},
            "sequence": self.sequence, "previous": self.previous, "time": self.time,
        }
        for k, v in (("reason", self.reason), ("ticket", self.ticket), ("tag", self.tag)):
            if v is not None:
                d[k] = v
        if self.corrections:
            d["corrections"] = dict(self.corrections)
        d.update(self.unrecognized)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LifecycleRecord:
        """Parse a predicate; InputError names what is wrong. Unknown fields are kept."""
        if not isinstance(data, Mapping):
            raise InputError("lifecycle record: the predicate is not an object")
        d = dict(data)
        model = d.pop("model", None)
        if not isinstance(model, Mapping) or not isinstance(model.get("digest"), str):
            raise InputError("lifecycle record: model {name, digest} missing")
        corrections = d.pop("corrections", None) or {}
        if not isinstance(corrections, Mapping):
            raise InputError("lifecycle record: corrections must be an object")
        try:
            action, stage, seq, time = d.pop("action"), d.pop("stage"), d.pop("sequence"), \
                d.pop("time")
        except KeyError as e:
            raise InputError(f"lifecycle record: {e.args[0]} missing") from e
        previous = d.pop("previous", None)
        if not isinstance(action, str) or not isinstance(time, str):
            raise InputError("lifecycle record: action and time are strings")
        reason, ticket, tag = (_opt_text(d, "reason"), _opt_text(d, "ticket"),
                               _opt_text(d, "tag"))
        for k in ("reason", "ticket", "tag"):
            d.pop(k, None)
        return cls(action, stage, str(model.get("name") or ""), model["digest"], seq, previous,
                   time, reason, ticket, tag, dict(corrections), d)

    def statement(self) -> dict[str, Any]:
        """The in-toto Statement of this record: its subject is the model's manifest."""
        from modelseal.attest.statement import statement

        return statement([(self.model or "model", self.digest)], LIFECYCLE_PREDICATE,
                         self.to_dict())


def record_of_statement(st: Mapping[str, Any]) -> LifecycleRecord:
    """The record a lifecycle Statement carries; its subject must be the record's model."""
    from modelseal.attest.payload import Statement

    parsed = Statement.from_dict(st)
    if parsed.predicate_type != LIFECYCLE_PREDICATE:
        raise InputError(f"not a lifecycle Statement ({parsed.predicate_type!r})")
    rec = LifecycleRecord.from_dict(parsed.predicate or {})
    hexd = rec.digest.partition(":")[2]
    if not parsed.subject or any(s.sha256 != hexd for s in parsed.subject):
        raise InputError("lifecycle record: its subject is not the model it names "
                         f"({rec.digest[:23]}...)")
    return rec
