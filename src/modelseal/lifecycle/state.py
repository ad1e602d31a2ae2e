"""What a verifier remembers about each model's lifecycle chain (like TUF's trusted state).

One small JSON file per model manifest digest under ``DIR/lifecycle/``: the highest record
(sequence, digest, stage, status) this verifier accepted; and per ``repository:tag`` under
``DIR/tags/`` the latest release under that tag it has seen (model digest, release time).
The directory is ``--state DIR``, ``$MODELSEAL_STATE``, or the user's state directory
(``$XDG_STATE_HOME/modelseal``, default ``~/.local/state/modelseal``). State only moves
forward: saving a lower sequence or an earlier release is ignored.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from modelseal._util.fs import atomic_write
from modelseal.errors import InputError
from modelseal.verify.lifecycle_chain import ChainState, TagRelease

STATE_ENV = "MODELSEAL_STATE"
_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")


def default_state_dir() -> Path:
    """``$MODELSEAL_STATE``, else ``$XDG_STATE_HOME/modelseal``, else ~/.local/state/modelseal."""
    env = os.environ.get(STATE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "modelseal"


class StateStore:
    """Per-model lifecycle heads in a directory."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_state_dir()

    def _path(self, model_digest: str) -> Path:
        m = _DIGEST.match(model_digest)
        if not m:
            raise InputError(f"state: {model_digest!r} is not a sha256 manifest digest")
        return self.directory / "lifecycle" / f"sha256-{m.group(1)}.json"

    def load(self, model_digest: str) -> ChainState | None:
        """The remembered head, or None. A corrupt state file is an error, not a blank slate:
        forgetting would let a rollback through."""
        p = self._path(model_digest)
        try:
            data = json.loads(p.read_text())
            return ChainState.from_dict(data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"lifecycle state {p} is unreadable: {e}",
                             hint="restore it from a backup; deleting it forgets what this "
                                  "verifier has seen") from e

    def _tag_path(self, repository: str, tag: str) -> Path:
        import hashlib

        key = hashlib.sha256(f"{repository}:{tag}".encode()).hexdigest()
        return self.directory / "tags" / f"{key}.json"

    def load_tag(self, repository: str, tag: str) -> TagRelease | None:
        """The latest release under ``repository:tag`` this verifier has seen."""
        p = self._tag_path(repository, tag)
        try:
            return TagRelease.from_dict(json.loads(p.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"tag state {p} is unreadable: {e}") from e

    def save_tag(self, repository: str, tag: str, release: TagRelease) -> bool:
        """Remember ``release`` if it is later than the one known; True when written."""
        known = self.load_tag(repository, tag)
        if known is not None and known.time >= release.time:
            return False
        self._write(self._tag_path(repository, tag),
                    {**release.to_dict(), "repository": repository, "tag": tag})
        return True

    def _write(self, p: Path, doc: dict[str, object]) -> None:
        p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(p, json.dumps(doc, sort_keys=True).encode(), mode=0o600,
                     tmp_prefix=".state-")

    def save(self, model_digest: str, state: ChainState) -> bool:
        """Remember ``state`` if it is ahead of what is known; True when written."""
        known = self.load(model_digest)
        if known is not None and known.sequence >= state.sequence:
            return False
        self._write(self._path(model_digest), {**state.to_dict(), "model": model_digest})
        return True
