"""OCI storage: one Store interface, three backends (registry, image-layout directory,
image-layout tarball).

``store`` (the protocol, and the base that checks every byte a backend hands out),
``image_layout`` and ``archive`` (files), ``_transport`` (HTTP: session, TLS, auth, the one
retry policy) under ``registry`` (the distribution API), ``referrers``, ``parse`` (hostile
registry answers), ``auth`` (Docker credentials). Nothing here imports modelpack or above."""

from __future__ import annotations

from typing import Any

from modelseal.oci.store import Store
from modelseal.refs import Ref


def open_store(ref: Ref, **registry_options: Any) -> Store:
    """The store a reference points at. ``registry_options`` go to the registry backend
    (insecure, ca_file, username, password, ...) and are ignored for directories."""
    if ref.kind == "oci":
        from modelseal.oci.image_layout import LayoutStore

        return LayoutStore(ref.location)
    if ref.kind == "oci-archive":
        from modelseal.oci.archive import ArchiveStore

        return ArchiveStore(ref.location)  # read-only: copy and bundle export write archives
    from modelseal.oci.registry import RegistryOptions, open_registry_store

    opts = RegistryOptions(**{k: v for k, v in registry_options.items() if v is not None})
    return open_registry_store(ref, opts)
