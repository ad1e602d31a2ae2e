"""Registry credentials and authentication challenges.

Credentials come from the caller (username/password) or from the Docker configuration, read the
way docker reads it: ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``, with
``auths`` (base64 ``auth``, ``username``/``password``, ``identitytoken``), ``credHelpers`` and
``credsStore`` (``docker-credential-<name> get``). modelseal never writes that file.

This is the only module below the CLI that reads environment variables (``DOCKER_CONFIG``).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelseal.errors import AuthError

LOGIN_HINT = ("pass --username and --password, or log in with `docker login {host}` "
              "(modelseal reads $DOCKER_CONFIG/config.json or ~/.docker/config.json and "
              "credential helpers)")


@dataclass(frozen=True)
class Credentials:
    """A username and password (or an identity token, used as an OAuth2 refresh token)."""

    username: str
    password: str = field(repr=False)
    source: str = "explicit"
    identity_token: str | None = field(default=None, repr=False)

    def basic(self) -> str:
        """The value of a Basic ``Authorization`` header."""
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` header: scheme (lowercase) and parameters."""

    scheme: str
    params: dict[str, str]

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")


_PARAM_RE = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')


def parse_challenge(header: str | None) -> Challenge | None:
    """Parse ``Bearer realm="...",service="...",scope="..."`` or ``Basic realm="..."``."""
    if not header or not header.strip():
        return None
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    for m in _PARAM_RE.finditer(rest):
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
    return Challenge(scheme.lower(), params)


def docker_config_path() -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json`` (it may not exist)."""
    base = os.environ.get("DOCKER_CONFIG")
    if base:
        return Path(base) / "config.json"
    return Path.home() / ".docker" / "config.json"


def _host_keys(host: str) -> list[str]:
    keys = [host]
    if host in ("docker.io", "registry-1.docker.io", "index.docker.io"):
        keys += ["https://index.docker.io/v1/", "index.docker.io", "docker.io"]
    return keys


def _normalize(key: str) -> str:
    """``https://host:5000/v1/`` -> ``host:5000`` (docker accepts both forms as keys)."""
    k = re.sub(r"^[a-z]+://", "", key.strip())
    return k.split("/", 1)[0]


def _from_auths(auths: dict[str, Any], host: str, source: str) -> Credentials | None:
    entry: Any = None
    for key in _host_keys(host):
        if key in auths:
            entry = auths[key]
            break
    else:
        for key, value in auths.items():
            if _normalize(key) in _host_keys(host):
                entry = value
                break
    if not isinstance(entry, dict):
        return None
    if entry.get("identitytoken"):
        return Credentials(str(entry.get("username") or "<token>"), "", source,
                           identity_token=str(entry["identitytoken"]))
    if entry.get("auth"):
        try:
            raw = base64.b64decode(str(entry["auth"]), validate=False).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as e:
            raise AuthError(f"the 'auth' entry for {host} in {source} is not valid base64 "
                            "of user:password", hint=LOGIN_HINT.format(host=host)) from e
        user, sep, password = raw.partition(":")
        if not sep:
            raise AuthError(f"the 'auth' entry for {host} in {source} is not user:password",
                            hint=LOGIN_HINT.format(host=host))
        return Credentials(user, password, source)
    if entry.get("username") and entry.get("password"):
        return Credentials(str(entry["username"]), str(entry["password"]), source)
    return None


def run_credential_helper(helper: str, host: str) -> Credentials | None:
    """``docker-credential-<helper> get`` for ``host``; None when it has nothing for it."""
    binary = f"docker-credential-{helper}"
    try:
        proc = subprocess.run([binary, "get"], input=host.encode(), capture_output=True,
                              timeout=60, check=False)
    except FileNotFoundError as e:
        raise AuthError(f"the Docker config names credential helper {helper!r} for {host}, "
                        f"but {binary} is not on PATH",
                        hint=f"install {binary} or remove it from the Docker config") from e
    except subprocess.TimeoutExpired as e:
        raise AuthError(f"credential helper {binary} did not answer for {host}") from e
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).decode(errors="replace").strip()
        if "not found" in out.lower():
            return None
        raise AuthError(f"credential helper {binary} failed for {host}: {out[:300]}")
    try:
        data = json.loads(proc.stdout)
        user, secret = str(data["Username"]), str(data["Secret"])
    except (ValueError, KeyError, TypeError) as e:
        raise AuthError(f"credential helper {binary} gave an unreadable answer for {host}") from e
    source = f"credential helper {binary}"
    if user == "<token>":
        return Credentials(user, "", source, identity_token=secret)
    return Credentials(user, secret, source)


def docker_credentials(host: str, config_path: Path | None = None) -> Credentials | None:
    """Credentials for ``host`` from the Docker config and its helpers, or None."""
    path = config_path or docker_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise AuthError(f"cannot read Docker config {path}: {e.strerror or e}") from e
    try:
        cfg = json.loads(text)
    except ValueError as e:
        raise AuthError(f"Docker config {path} is not valid JSON: {e}") from e
    if not isinstance(cfg, dict):
        raise AuthError(f"Docker config {path} is not a JSON object")
    helpers = cfg.get("credHelpers") or {}
    for key in _host_keys(host):
        if isinstance(helpers, dict) and helpers.get(key):
            return run_credential_helper(str(helpers[key]), host)
    auths = cfg.get("auths") or {}
    creds = _from_auths(auths, host, str(path)) if isinstance(auths, dict) else None
    if creds is not None:
        return creds
    if cfg.get("credsStore"):
        return run_credential_helper(str(cfg["credsStore"]), host)
    return None
