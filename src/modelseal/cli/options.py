"""Option groups shared by commands, each turning parsed arguments into what the library
takes: registry options (for ``open_store``), a TSA (``timestamping``), a signer
(``load_signer``). Commands import these; they never import each other.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from modelseal.cli.render import errors_to_exit

F = TypeVar("F", bound=Callable[..., Any])


# ---- registry ------------------------------------------------------------------------------

def registry_options(f: F) -> F:
    """Options every command that talks to a registry takes."""
    f = click.option("--insecure", is_flag=True,
                     help="Use plain HTTP for a registry other than localhost/127.0.0.1.")(f)
    f = click.option("--ca-file", type=click.Path(exists=True, dir_okay=False),
                     envvar="MODELSEAL_CA_FILE",
                     help="CA bundle (PEM) for a registry with a private TLS certificate.")(f)
    f = click.option("--username", envvar="MODELSEAL_REGISTRY_USERNAME",
                     help="Registry user (default: Docker config / credential helpers).")(f)
    f = click.option("--password-stdin", is_flag=True,
                     help="Read the registry password from standard input.")(f)
    return f


def store_kwargs(kw: dict[str, Any]) -> dict[str, Any]:
    """Registry options from parsed CLI arguments (pops them from ``kw``)."""
    import os

    password = os.environ.get("MODELSEAL_REGISTRY_PASSWORD")
    if kw.pop("password_stdin", False):
        password = sys.stdin.readline().rstrip("\r\n")
    return {"insecure": kw.pop("insecure", False) or None, "ca_file": kw.pop("ca_file", None),
            "username": kw.pop("username", None), "password": password}


def open_ref(text: str, opts: dict[str, Any], default_tag: str | None = "latest") -> Any:
    """(Ref, Store) for a reference given on the command line."""
    from modelseal.oci import open_store
    from modelseal.refs import parse_ref

    ref = parse_ref(text, default_tag=default_tag)
    return ref, open_store(ref, **opts)


# ---- signing ---------------------------------------------------------------------------------

def tsa_option(f: F) -> F:
    """``--tsa URL`` (env MODELSEAL_TSA) for a command that signs: every keyed signature the
    command makes is countersigned by that RFC 3161 Time-Stamp Authority."""

    def enable(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        from modelseal.attest.tsa import TSAClient, timestamping, tsa_url

        with errors_to_exit(False):
            url = tsa_url(value)
        if url:
            ctx.with_resource(timestamping(TSAClient(url)))

    return click.option("--tsa", metavar="URL", expose_value=False, callback=enable,
                        help="RFC 3161 Time-Stamp Authority that countersigns each keyed "
                             "signature (env MODELSEAL_TSA).")(f)


def signer_options(f: F, *, required: bool = True) -> F:
    """--signer and what some signers need beside it (--tsa for a signed time)."""
    f = tsa_option(f)
    f = click.option("--trust-config", metavar="FILE|staging",
                     help="Sigstore client trust config for keyless signing on a private "
                          "Sigstore deployment (default: public Sigstore).")(f)
    f = click.option("--public-key", type=click.Path(exists=True, dir_okay=False),
                     help="PEM public key of a KMS signer (default: fetched from the KMS).")(f)
    f = click.option("--signer", required=required, envvar="MODELSEAL_SIGNER", metavar="URI|PATH",
                     help="PEM private key path, or a signer URI: file2:PATH, hsm:ID?label=L, "
                          "sigstore:, gcpkms:, awskms:, azurekms:, hv: (env MODELSEAL_SIGNER).")(f)
    return f


def signer_options_optional(f: F) -> F:
    """:func:`signer_options` for a command that also runs without signing."""
    return signer_options(f, required=False)


def load_signer(kw: dict[str, Any]) -> Any:
    """The signer :func:`signer_options` describe (pops their values from ``kw``), or None
    when no ``--signer`` was given."""
    uri = kw.pop("signer", None)
    public_key = kw.pop("public_key", None)
    trust_config = kw.pop("trust_config", None)
    if not uri:
        return None
    from modelseal.attest.signers import load_public_key
    from modelseal.attest.signers import load_signer as load

    pub = load_public_key(public_key) if public_key else None
    return load(uri, public_key=pub, trust_config=trust_config)

