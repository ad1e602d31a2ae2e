"""Parsing model references.

Three kinds:

- ``oci-archive:FILE[:TAG|@sha256:HEX]``: a single-file OCI image-layout tarball (an audit
  bundle, a disaster-recovery copy), same tag rules as ``oci:``.
- ``oci:PATH[:TAG|@sha256:HEX]``: an OCI image-layout directory on disk (the embedded default).
  The tag defaults to ``latest``. A PATH containing ``:`` can be written ``oci:PATH@digest`` or
  with the tag separated by the *last* colon.
- ``HOST[:PORT]/REPO[:TAG|@sha256:HEX]``: a repository in a registry, as docker writes it.
  ``HOST`` must contain a ``.`` or ``:`` or be ``localhost``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal

from modelseal.errors import UsageError

TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
"""A digest modelseal fetches by and writes: sha256, lowercase hex."""
ANY_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
"""Any digest of the OCI grammar (image-spec descriptor.md: algorithm ":" encoded), as a
descriptor from outside may carry; modelseal reads only ``DIGEST_RE``."""
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPO_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")


@dataclass(frozen=True)
class Ref:
    kind: Literal["oci", "oci-archive", "registry"]
    location: str  # directory path (oci) or host[:port] (registry)
    repository: str = ""  # registry only
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What to resolve: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: str) -> Ref:
        return replace(self, digest=digest)

    def with_tag(self, tag: str | None) -> Ref:
        return replace(self, tag=tag)

    @property
    def base(self) -> str:
        if self.kind in ("oci", "oci-archive"):
            return f"{self.kind}:{self.location}"
        return f"{self.location}/{self.repository}"

    def __str__(self) -> str:
        s = self.base
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s


def _split_tag_digest(rest: str) -> tuple[str, str | None, str | None]:
    digest = None
    if "@" in rest:
        rest, digest = rest.rsplit("@", 1)
        if not DIGEST_RE.match(digest):
            raise UsageError(f"invalid digest {digest!r}: expected sha256:<64 lowercase hex>")
    return rest, None, digest


_HOST_RE = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")
"""A registry host as docker accepts it: DNS labels or a bracketed IPv6 address, then a port."""


def _kind_prefix(text: str) -> Literal["oci", "oci-archive"] | None:
    return ("oci" if text.startswith("oci:") else
            "oci-archive" if text.startswith("oci-archive:") else None)


def _names_a_host(text: str) -> bool:
    """Does ``text`` start like ``HOST/...`` for a registry host (a ``.`` or ``:`` in it, or
    ``localhost``) rather than a path (``./x``, ``/x``, ``~/x``, ``dir/x``)?"""
    host, slash, _ = text.partition("/")
    return bool(slash) and not text.startswith((".", "/", "~")) and (
        "." in host or ":" in host or host == "localhost")


def is_reference(text: str) -> bool:
    """Is ``text`` written as a store reference (``oci:``, ``oci-archive:`` or a registry's
    ``HOST/REPO``) rather than a file path? The first decision of :func:`parse_ref`, for
    callers that accept either (a policy's layout); whether it parses is parse_ref's to say."""
    return _kind_prefix(text) is not None or _names_a_host(text)


def parse_ref(text: str, default_tag: str | None = "latest") -> Ref:
    """Parse a reference; raises UsageError with the accepted forms when it cannot."""
    if not text:
        raise UsageError("empty reference")
    kind = _kind_prefix(text)
    if kind is not None:
        body, _, digest = _split_tag_digest(text[len(kind) + 1:])
        tag: str | None = None
        path = body
        if ":" in body:
            head, cand = body.rsplit(":", 1)
            if TAG_RE.match(cand) and "/" not in cand:
                path, tag = head, cand
        if not path:
            raise UsageError(f"reference {text!r} has no {'directory' if kind == 'oci' else 'file'}"
                             f": write {kind}:PATH[:TAG]")
        if tag is None and digest is None:
            tag = default_tag
        if tag is not None and not TAG_RE.match(tag):
            raise UsageError(f"invalid tag {tag!r} in {text!r}")
        return Ref(kind, path, tag=tag, digest=digest)

    body, _, digest = _split_tag_digest(text)
    if "/" not in body:
        raise UsageError(
            f"cannot tell where {text!r} lives: write HOST[:PORT]/REPO[:TAG] for a registry "
            "or oci:PATH[:TAG] for an image-layout directory")
    host, path = body.split("/", 1)
    if text.startswith((".", "/", "~")) or (host and not _HOST_RE.match(host)):
        # ./models:v1, /srv/models, ~/m: a directory written without the oci: prefix
        raise UsageError(
            f"{text!r} looks like a directory, not a registry reference",
            hint=f"for an image-layout directory write oci:{text}")
    if not ("." in host or ":" in host or host == "localhost"):
        raise UsageError(
            f"{host!r} in {text!r} is not a registry host (it needs a '.' or ':' or to be "
            "'localhost'); for a directory write oci:PATH[:TAG]")
    tag = None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, tag = path.rsplit(":", 1)
        if not TAG_RE.match(tag):
            raise UsageError(f"invalid tag {tag!r} in {text!r}")
    if not REPO_RE.match(path):
        raise UsageError(
            f"invalid repository name {path!r} in {text!r}: lowercase letters, digits and "
            "separators (. _ - /) only")
    if tag is None and digest is None:
        tag = default_tag
    return Ref("registry", host, repository=path, tag=tag, digest=digest)
