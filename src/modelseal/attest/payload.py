"""The payload classes of attestations: :class:`Statement` and :class:`ResourceDescriptor`,
and the field readers every typed payload uses.

Each class checks its JSON once, in ``from_dict`` (InputError naming the field that is wrong),
keeps the fields it does not know in ``unrecognized``, and writes everything back in
``to_dict``: ``to_dict(from_dict(d)) == d``, so a payload read and written again signs to the
same canonical bytes. The predicates are in :mod:`modelseal.attest.predicates`; the builders of
the Statements modelseal signs in :mod:`modelseal.attest.statement`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, Self, TypeVar

from modelseal.errors import InputError
from modelseal.formats import STATEMENT_TYPE, STATEMENT_TYPES

_HEX64 = re.compile(r"^[0-9a-f]{64}$")

Subject = tuple[str, str]
"""(name, sha256 hex)."""


def sha256_hex(digest: str, what: str) -> str:
    """The lower-case hex of a sha256 digest given as hex or ``sha256:hex``; InputError if not."""
    d = digest.removeprefix("sha256:").lower()
    if not _HEX64.match(d):
        raise InputError(f"{what}: {digest!r} is not a sha256 digest")
    return d


# ---------------------------------------------------------------------------------------------
# reading JSON fields once: every payload class below validates with these, so a consumer
# holding an object never re-checks a type


def as_object(value: Any, what: str) -> dict[str, Any]:
    """A copy of ``value`` as a dict, or InputError naming ``what`` is not a JSON object."""
    if type(value) is not dict and not isinstance(value, Mapping):
        raise InputError(f"{what} must be a JSON object, not {type(value).__name__}")
    return dict(value)


def pop_str(d: dict[str, Any], key: str, what: str, *, required: bool = False) -> str | None:
    """``d.pop(key)`` as a string (None when absent and not ``required``)."""
    if key not in d:
        if required:
            raise InputError(f"{what}: {key} is missing")
        return None
    v = d.pop(key)
    if not isinstance(v, str):
        raise InputError(f"{what}: {key} must be a string, not {type(v).__name__}")
    return v


def pop_object(d: dict[str, Any], key: str, what: str) -> dict[str, Any] | None:
    """``d.pop(key)`` as a JSON object, or None when absent."""
    return as_object(d.pop(key), f"{what}: {key}") if key in d else None


def pop_list(d: dict[str, Any], key: str, what: str) -> list[Any] | None:
    """``d.pop(key)`` as a JSON array, or None when absent."""
    if key not in d:
        return None
    v = d.pop(key)
    if not isinstance(v, list):
        raise InputError(f"{what}: {key} must be a list, not {type(v).__name__}")
    return list(v)


def pop_str_list(d: dict[str, Any], key: str, what: str) -> list[str] | None:
    """``d.pop(key)`` as a list of strings, or None when absent."""
    items = pop_list(d, key, what)
    if items is not None and not all(isinstance(i, str) for i in items):
        raise InputError(f"{what}: {key} must be a list of strings")
    return items


def put(d: dict[str, Any], key: str, value: Any) -> None:
    """Set ``d[key]`` unless ``value`` is None (an absent optional field stays absent)."""
    if value is not None:
        d[key] = value


_ABSENT: Any = object()
_RD_FIELDS = frozenset(("name", "uri", "digest", "annotations"))


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 5x, and there are 100,000s
class ResourceDescriptor:
    """An in-toto ResourceDescriptor: a named (or located) thing and its digests.

    Fields modelseal does not know (``content``, ``mediaType``, ...) are kept in
    ``unrecognized`` and written back, so a round trip changes no byte of a signed payload.
    """

    name: str | None = None
    digest: dict[str, str] | None = None
    uri: str | None = None
    annotations: dict[str, Any] | None = None
    unrecognized: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, name: str, sha256: str, **extra: Any) -> ResourceDescriptor:
        """A descriptor named ``name`` with a sha256 digest (hex or ``sha256:hex``)."""
        if not extra:  # the common case, for 100,000s of files
            return cls(name, {"sha256": sha256_hex(sha256, name)})
        annotations = extra.pop("annotations", None)
        uri = extra.pop("uri", None)
        return cls(name=name, digest={"sha256": sha256_hex(sha256, name)}, uri=uri,
                   annotations=dict(annotations) if annotations is not None else None,
                   unrecognized={k: v for k, v in extra.items() if v is not None})

    @property
    def sha256(self) -> str | None:
        """The sha256 hex digest, when there is one."""
        return (self.digest or {}).get("sha256")

    @property
    def label(self) -> str | None:
        """What to call it: its name, else its URI."""
        return self.name or self.uri

    @staticmethod
    def is_plain(data: Any) -> bool:
        """Whether ``data`` is a descriptor as JSON parsers give it: a dict whose known fields,
        when present, have the right types. Cheap, without building anything: a model's BOM
        or link names 100,000 files, and every subject is checked here."""
        if type(data) is not dict:
            return False
        name = data.get("name", _ABSENT)
        uri = data.get("uri", _ABSENT)
        digest = data.get("digest", _ABSENT)
        annotations = data.get("annotations", _ABSENT)
        return ((name is _ABSENT or type(name) is str)
                and (uri is _ABSENT or type(uri) is str)
                and (digest is _ABSENT or (type(digest) is dict and not [
                    v for v in digest.values() if type(v) is not str]))
                and (annotations is _ABSENT or type(annotations) is dict))

    @classmethod
    def from_dict(cls, data: Any, what: str = "resource descriptor") -> ResourceDescriptor:
        """Read one descriptor; InputError names the field that is wrong."""
        if cls.is_plain(data):
            # the common case (see is_plain) without a call per field
            name = data.get("name")
            uri = data.get("uri")
            digest = data.get("digest")
            annotations = data.get("annotations")
            known = ((name is not None) + (uri is not None) + (digest is not None)
                     + (annotations is not None))
            extra = ({k: v for k, v in data.items() if k not in _RD_FIELDS}
                     if len(data) > known else {})
            return cls(name, None if digest is None else dict(digest), uri,
                       None if annotations is None else dict(annotations), extra)
        d = as_object(data, what)
        name = pop_str(d, "name", what)
        uri = pop_str(d, "uri", what)
        digest = pop_object(d, "digest", what)
        if digest is not None and not all(isinstance(v, str) for v in digest.values()):
            raise InputError(f"{what}: every digest value must be a string")
        annotations = pop_object(d, "annotations", what)
        return cls(name, digest, uri, annotations, d)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, unrecognized fields included."""
        d: dict[str, Any] = {}
        # inline rather than put(): this runs once per file of a model
        if self.name is not None:
            d["name"] = self.name
        if self.uri is not None:
            d["uri"] = self.uri
        if self.digest is not None:
            d["digest"] = dict(self.digest)
        if self.annotations is not None:
            d["annotations"] = dict(self.annotations)
        if self.unrecognized:
            d.update(self.unrecognized)
        return d


def descriptors(items: list[Any] | None, what: str) -> list[ResourceDescriptor] | None:
    """A JSON list of ResourceDescriptors, each read by :meth:`ResourceDescriptor.from_dict`."""
    if items is None:
        return None
    return [ResourceDescriptor.from_dict(rd, f"{what}[{i}]") for i, rd in enumerate(items)]


def descriptors_to_list(rds: Sequence[ResourceDescriptor] | None) -> list[dict[str, Any]] | None:
    """The JSON list of ``rds`` (None stays None: the field stays absent)."""
    return None if rds is None else [rd.to_dict() for rd in rds]


@dataclass(frozen=True, slots=True)
class Statement:
    """An in-toto Statement (v1, or v0.1 as read): subjects, a predicate type and a predicate.

    The predicate stays a JSON object here: any predicate type can be carried, and the typed
    classes of :mod:`modelseal.attest.predicates` read the ones modelseal understands
    (:meth:`predicate_as`). Every subject has a digest (in-toto's rule for subjects).
    """

    subject: list[ResourceDescriptor]
    predicate_type: str
    predicate: dict[str, Any] | None = None
    statement_type: str = STATEMENT_TYPE
    unrecognized: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any) -> Statement:
        """Read a Statement; InputError says what is wrong. Unknown fields are kept."""
        if not isinstance(data, Mapping):
            raise InputError("a Statement must be a JSON object")
        d = dict(data)
        st_type = d.pop("_type", None)
        if st_type not in STATEMENT_TYPES:
            raise InputError(f"_type is {st_type!r}, not {STATEMENT_TYPE}")
        raw_subjects = d.pop("subject", None)
        if not isinstance(raw_subjects, list):
            raise InputError("a Statement's subject must be a list")
        subjects = [ResourceDescriptor.from_dict(s, "a Statement's subject")
                    for s in raw_subjects]
        if any(s.digest is None for s in subjects):
            raise InputError("each subject needs a digest")
        ptype = d.pop("predicateType", None)
        if not isinstance(ptype, str) or not ptype:
            raise InputError("a Statement needs a predicateType")
        predicate = None
        if "predicate" in d:
            predicate = d.pop("predicate")
            if not isinstance(predicate, Mapping):
                raise InputError("a Statement's predicate must be a JSON object")
            predicate = dict(predicate)
        return cls(subjects, ptype, predicate, st_type, d)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, unrecognized fields included (what :func:`canonical_json` signs)."""
        d: dict[str, Any] = {"_type": self.statement_type,
                             "subject": [s.to_dict() for s in self.subject],
                             "predicateType": self.predicate_type}
        put(d, "predicate", None if self.predicate is None else dict(self.predicate))
        d.update(self.unrecognized)
        return d

    @property
    def subjects(self) -> list[Subject]:
        """(name, sha256 hex) of each subject that has a sha256 digest (name ``""`` if none)."""
        return [(s.name or "", s.sha256) for s in self.subject if s.sha256]

    def predicate_as(self, cls: type[P]) -> P:
        """The predicate read as ``cls`` (a class of :mod:`modelseal.attest.predicates`).

        InputError when this Statement has another predicate type or a malformed predicate.
        """
        if self.predicate_type not in cls.PREDICATE_TYPES:
            raise InputError(f"not a {cls.__name__} Statement: predicateType "
                             f"{self.predicate_type!r}")
        return cls.from_dict(self.predicate or {})

    def predicate_if(self, cls: type[P]) -> P | None:
        """The predicate as ``cls``, or None when it is another one or malformed (for readers
        that list what attestations claim and skip what they cannot read)."""
        try:
            return self.predicate_as(cls)
        except InputError:
            return None


class PredicateClass(Protocol):
    """What a typed predicate offers: its predicate types and a symmetric dict mapping."""

    PREDICATE_TYPES: ClassVar[tuple[str, ...]]

    @classmethod
    def from_dict(cls, data: Any) -> Self: ...

    def to_dict(self) -> dict[str, Any]: ...


P = TypeVar("P", bound=PredicateClass)


def check_statement(st: Any) -> None:
    """Raise InputError unless :meth:`Statement.from_dict` would read ``st``: the same rules,
    without building the objects (bundles are checked before anything reads them)."""
    if not isinstance(st, Mapping):
        raise InputError("a Statement must be a JSON object")
    subjects = st.get("subject")
    if not isinstance(subjects, list) or len(subjects) < 64:
        Statement.from_dict(st)
        return
    for s in subjects:
        if not (ResourceDescriptor.is_plain(s) and "digest" in s):
            Statement.from_dict({**st, "subject": [s]})  # raises, naming what is wrong
    Statement.from_dict({**st, "subject": []})
