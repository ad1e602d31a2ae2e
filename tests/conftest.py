"""Shared pytest fixtures: real registries (Debian's docker-registry) on 127.0.0.1.

- ``registry``: plain HTTP, fresh storage for each test. ``.host``, ``.url``, ``.storage_dir``,
  ``.start()``, ``.stop()`` (restart keeps port and storage).
- ``auth_registry``: TLS with a throwaway CA (``.ca_file``) and htpasswd (``.username``,
  ``.password``), fresh for each test.
- ``token_registry``: plain HTTP with Bearer token auth from a small token service
  (``.token_server``, which records the token requests), same credentials attributes.
- ``blob_path(storage_dir, digest)``: where the registry keeps a blob, to tamper with it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from paths import missing_tool, running
from registry_server import REGISTRY_BIN, RegistryServer, TokenServer, blob_path

__all__ = ["RegistryServer", "TokenServer", "blob_path"]

@pytest.fixture
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A plain-HTTP registry with empty storage, stopped after the test."""
    yield from running(lambda: RegistryServer(tmp_path_factory.mktemp("registry")),
                       REGISTRY_BIN)


@pytest.fixture
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A TLS + htpasswd registry (user ``modelseal`` / ``s3cret-pass``), stopped after the test."""
    yield from running(lambda: RegistryServer(tmp_path_factory.mktemp("auth-registry"),
                                              tls=True, credentials=("modelseal", "s3cret-pass")),
                       REGISTRY_BIN, "htpasswd")



@pytest.fixture
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A registry with Docker token auth (Bearer), user ``modelseal`` / ``t0ken-pass``."""
    if shutil.which(REGISTRY_BIN) is None:
        missing_tool("docker-registry")
    workdir = tmp_path_factory.mktemp("token-registry")
    tokens = TokenServer(workdir / "tokens", "modelseal", "t0ken-pass")
    tokens.start()
    server = RegistryServer(workdir, token_server=tokens)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        tokens.stop()
