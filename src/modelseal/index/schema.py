"""One schema for SQLite and PostgreSQL (SQLAlchemy Core), database URLs, and migrations.

Migrations are numbered functions run in order inside one transaction each; the
``schema_migrations`` table records which ran. The index is a cache: a migration that cannot
carry the data over may drop it, and ``modelseal index`` rebuilds it from the registries.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    select,
)

from modelseal._util.time import rfc3339
from modelseal.errors import UsageError

DB_ENV = "MODELSEAL_DB"

metadata = MetaData()

migrations_table = Table(
    "schema_migrations", metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", String(32), nullable=False),
)

# one row per tag seen in a crawled repository (repo: the source's base, e.g. oci:/abs/dir)
tags = Table(
    "tags", metadata,
    Column("repo", String(1000), primary_key=True),
    Column("tag", String(200), primary_key=True),
    Column("digest", String(80), nullable=False, index=True),
)

# one row per tagged manifest; evidence_key says which referrers (and policy) it was built from
models = Table(
    "models", metadata,
    Column("repo", String(1000), primary_key=True),
    Column("digest", String(80), primary_key=True),
    Column("artifact_type", String(500)),
    Column("name", String(500), index=True),
    Column("version", String(500)),
    Column("created", String(40)),
    Column("evidence_key", String(80)),
    Column("policy", String(200)),  # the policy's digest, None when indexed without one
    Column("stage", String(500)),  # verified current stage (None: never promoted / unknown)
    Column("status", String(500)),
    Column("stage_basis", Text),  # why the stage is what it is (or why unknown)
)

# one row per attestation attached to a model, verified or not (with the reason)
attestations = Table(
    "attestations", metadata,
    Column("repo", String(1000), primary_key=True),
    Column("model_digest", String(80), primary_key=True),
    Column("attestation", String(80), primary_key=True),  # referrer manifest digest
    Column("predicate_type", String(500), index=True),
    Column("verified", Boolean, nullable=False),
    Column("reason", Text),  # why not verified
    Column("signer", String(500), index=True),  # functionary name (verified) or claimed hint
    Column("step", String(500)),
    Column("time", String(40), index=True),
    Column("time_source", String(20)),  # signed | annotation | none
)

# what an attestation says the model was made from: datasets, code, base models
dependencies = Table(
    "dependencies", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("repo", String(1000), nullable=False),
    Column("model_digest", String(80), nullable=False),
    Column("attestation", String(80), nullable=False),
    Column("kind", String(40), nullable=False),  # dataset | code | base-model | other
    Column("role", String(40), nullable=False),  # train | evaluate | bom
    Column("digest", String(500), index=True),  # sha256:<hex> or gitCommit:<hex>
    Column("scheme", String(500)),  # sha256 (a file), modelseal-dirhash-v1, or the old listing
    Column("name", String(1000), index=True),
    Column("uri", Text),
    Index("ix_dependencies_model", "repo", "model_digest"),
)

# the verified lifecycle chain of each model
stage_events = Table(
    "stage_events", metadata,
    Column("repo", String(1000), primary_key=True),
    Column("model_digest", String(80), primary_key=True),
    Column("sequence", Integer, primary_key=True, autoincrement=False),
    Column("action", String(500), nullable=False),
    Column("stage", String(500)),
    Column("time", String(40)),
    Column("signers", Text),  # comma-separated functionary names
    Column("record", String(80)),
)

SCHEMA_TABLES = (tags, models, attestations, dependencies, stage_events)

# migration 2: `lineage --dataset URI` looked datasets up by URI with a full scan
dependencies_uri = Index("ix_dependencies_uri", dependencies.c.uri)


def _m1(conn: Connection) -> None:
    """The first schema."""
    for t in SCHEMA_TABLES:
        t.create(conn, checkfirst=True)


def _m2(conn: Connection) -> None:
    """An index on dataset URIs (new databases already have it from ``_m1``)."""
    dependencies_uri.create(conn, checkfirst=True)


MIGRATIONS: list[Callable[[Connection], None]] = [_m1, _m2]
SCHEMA_VERSION = len(MIGRATIONS)


def default_db_url() -> str:
    """``$MODELSEAL_DB``, else a SQLite file in the user's data directory."""
    env = os.environ.get(DB_ENV)
    if env:
        return env
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return f"sqlite:///{Path(base) / 'modelseal' / 'index.sqlite'}"


def engine_url(url: str | None) -> str:
    """A SQLAlchemy URL for ``sqlite:///PATH``, a plain path, or ``postgresql://...``."""
    url = url or default_db_url()
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("postgresql+psycopg://"):
        return url
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
    elif "://" in url:
        raise UsageError(f"database {url!r} is neither sqlite:///PATH, a path, nor "
                         "postgresql://USER@HOST:PORT/DB")
    else:
        path = url
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{p}"


def connect(url: str | None = None) -> Engine:
    """An engine for the index at ``url`` (default: ``default_db_url()``), migrated."""
    full = engine_url(url)
    if full.startswith("postgresql"):
        try:
            import psycopg  # noqa: F401
        except ImportError as e:
            raise UsageError("PostgreSQL needs the psycopg driver",
                             hint="pip install 'modelseal[postgres]'") from e
    engine = create_engine(full, future=True)
    with database_errors(url):
        migrate(engine)
    return engine


@contextmanager
def database_errors(url: str | None = None) -> Iterator[None]:
    """Turn the database's errors into StoreError (exit 3), naming the database."""
    from sqlalchemy.exc import SQLAlchemyError

    from modelseal.errors import StoreError

    try:
        yield
    except SQLAlchemyError as e:
        orig = getattr(e, "orig", None)
        raise StoreError(f"index database {url or default_db_url()}: "
                         f"{str(orig or e).strip().splitlines()[0]}") from e


def migrate(engine: Engine) -> int:
    """Run the migrations not yet applied; the schema version now."""
    with engine.begin() as conn:
        migrations_table.create(conn, checkfirst=True)
        done = {int(v) for v in conn.execute(select(migrations_table.c.version)).scalars()}
    for n, step in enumerate(MIGRATIONS, start=1):
        if n in done:
            continue
        with engine.begin() as conn:
            step(conn)
            conn.execute(migrations_table.insert().values(
                version=n, applied_at=rfc3339(datetime.now(UTC))))
    return SCHEMA_VERSION


def drop_all(engine: Engine) -> None:
    """Drop every table of the index (it is a cache: ``index`` rebuilds it)."""
    with engine.begin() as conn:
        for t in reversed(SCHEMA_TABLES):
            t.drop(conn, checkfirst=True)
        migrations_table.drop(conn, checkfirst=True)
