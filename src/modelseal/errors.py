"""One exception hierarchy. Every message is written for the person who reads it:
what was refused, why, and (where it helps) what to do next."""

from __future__ import annotations


class ModelsealError(Exception):
    """Base of every error modelseal raises on purpose. ``exit_code`` is what the CLI returns."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class UsageError(ModelsealError):
    """The arguments or input files are wrong (bad reference, bad metadata, bad option)."""

    exit_code = 2


class InputError(UsageError):
    """A file or directory given to modelseal cannot be used as it is."""


class UnsafePathError(InputError):
    """A path would escape its root, repeat, or pass through a symlink."""


class DigestMismatchError(ModelsealError):
    """Content did not hash to the digest that names it. Never written into place."""

    exit_code = 4


class StoreError(ModelsealError):
    """The OCI store (registry or image-layout directory) failed or refused."""

    exit_code = 3


class NotFoundError(StoreError):
    """A tag, manifest or blob does not exist in the store."""


class AuthError(StoreError):
    """The registry refused our credentials or asked for credentials we do not have."""


class RegistryUnreachableError(StoreError):
    """The registry could not be reached (connection refused, TLS failure, timeouts)."""


class RegistryTimeoutError(RegistryUnreachableError):
    """The registry stopped answering for longer than ``--timeout``, or the command ran past
    ``--deadline`` (docs/network.md)."""


class Stopped(StoreError):
    """A transfer stopped because another part of the same operation failed
    (``_util.network.stop_when``); the operation reports that first failure, not this."""


class TagConflictError(ModelsealError):
    """Pushing would move an existing tag to another digest."""

    exit_code = 5


class DiskFullError(ModelsealError):
    """The destination file system has no room (bytes or inodes) for what must be written."""

    exit_code = 7


class SigningError(ModelsealError):
    """A signer could not be loaded or could not sign."""

    exit_code = 6


class VerificationError(ModelsealError):
    """Verification refused the artifact. ``reasons`` lists each failure for the report."""

    exit_code = 10

    def __init__(self, message: str, *, reasons: list[str] | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reasons = reasons or [message]
