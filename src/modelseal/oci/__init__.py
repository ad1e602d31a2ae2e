"""OCI storage: one Store interface, two backends (registry, image-layout directory)."""

from __future__ import annotations

from typing import Any

from modelseal.oci.store import Store
from modelseal.refs import Ref


def open_store(ref: Ref, **registry_options: Any) -> Store:
    """The store a reference points at. ``registry_options`` go to the registry backend
    (insecure, ca_file, username, password, ...) and are ignored for directories."""
    if ref.kind == "oci":
        from modelseal.oci.layout import LayoutStore

        return LayoutStore(ref.location)
    from modelseal.oci.registry import RegistryOptions, open_registry_store

    opts = RegistryOptions(**{k: v for k, v in registry_options.items() if v is not None})
    return open_registry_store(ref, opts)
