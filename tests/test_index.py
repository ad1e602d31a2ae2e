"""The evidence index and lineage queries, on SQLite and on a real PostgreSQL (Debian's).

The index is a cache of verified evidence: what does not verify is recorded with its reason
and answers say so; a re-run fetches only what changed; dropping the database and indexing
again gives identical answers.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from index_fixtures import CENSUS, REVIEWS, World, build_world, evaluation, promote_staging
from modelseal.errors import NotFoundError
from modelseal.index.crawler import crawl
from modelseal.index.queries import every_answer, lineage_dataset, lineage_model, search
from modelseal.index.schema import connect, drop_all
from paths import missing_tool
from postgres_server import PostgresServer, pg_bindir


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    if pg_bindir() is None:
        missing_tool("postgresql")
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty index database on each engine."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'index.sqlite'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database("idx_" + uuid.uuid4().hex[:12])


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("world"))


@pytest.fixture
def world(pristine: World, tmp_path: Path) -> World:
    """A private copy of the world (tests may attach, retag, delete)."""
    oci = tmp_path / "models"
    shutil.copytree(pristine.oci, oci)
    return World(pristine.tmp, oci, pristine.policy, pristine.keys, dict(pristine.digests))


def _models(answer: dict[str, object]) -> list[tuple[str, str, bool]]:
    return [(m["model"]["name"], m["role"], m["verified"])  # type: ignore[index]
            for m in answer["models"]]  # type: ignore[attr-defined]


def test_lineage_dataset_finds_models_trained_and_evaluated_on_it(world: World,
                                                                   db_url: str) -> None:
    engine = connect(db_url)
    crawl(engine, [world.source], policy=world.policy)
    for query in ("census", CENSUS, "https://data.example/census"):
        ans = lineage_dataset(engine, query)
        got = {(n, r) for n, r, v in _models(ans) if v}
        assert got == {("base", "train"), ("finetune", "evaluate")}, query
    base = next(m for m in lineage_dataset(engine, "census")["models"]
                if m["model"]["name"] == "base")
    assert (base["step"], base["signer"], base["timeSource"]) == ("train", "trainer", "signed")
    assert base["model"]["stage"] == "staging"
    assert base["model"]["tags"] == ["base-v1"]
    assert {n for n, _, _ in _models(lineage_dataset(engine, REVIEWS))} == {"finetune"}


def test_provenance_signed_by_unknown_key_is_indexed_unverified_with_reason(
        world: World, db_url: str) -> None:
    engine = connect(db_url)
    crawl(engine, [world.source], policy=world.policy)
    ans = lineage_dataset(engine, "census")
    evil = [m for m in ans["models"] if m["model"]["name"] == "evil"]
    assert len(evil) == 1 and evil[0]["verified"] is False and evil[0]["reason"]
    assert evil[0]["step"] is None  # no step is credited to an unverified signer
    assert ans["unverified"] == 1
    only = lineage_dataset(engine, "census", verified_only=True)
    assert "evil" not in {n for n, _, _ in _models(only)}


def test_provenance_copied_from_another_model_does_not_count_for_this_one(
        world: World, db_url: str) -> None:
    from index_fixtures import provenance

    # the trainer's genuine provenance of base-v1, attached to evil-v1 by someone else
    world.attach("evil-v1", provenance(world.digests["base-v1"],
                                       [{"name": "reviews", "digest": {"sha256": "7e" * 32}}]),
                 "trainer")
    engine = connect(db_url)
    crawl(engine, [world.source], policy=world.policy)
    rows = [m for m in lineage_dataset(engine, "reviews")["models"]
            if m["model"]["name"] == "evil"]
    assert len(rows) == 1 and rows[0]["verified"] is False
    assert "subject" in rows[0]["reason"]
    assert rows[0]["signer"] == "trainer"  # the signature is genuine; the claim is not this model's


def test_lineage_model_names_datasets_code_base_signers_stages_and_derivatives(
        world: World, db_url: str) -> None:
    engine = connect(db_url)
    crawl(engine, [world.source], policy=world.policy)
    base = lineage_model(engine, world.ref("base-v1"))["results"][0]
    assert [(d["name"], d["role"], d["verified"]) for d in base["datasets"]] == [
        ("census", "train", True)]
    assert base["code"][0]["digest"].startswith("gitCommit:0123")
    assert [h["stage"] for h in base["stageHistory"]] == ["staging"]
    assert {"signer": "trainer", "steps": ["train"]} in base["signers"]
    assert [d["name"] for d in base["derived"]] == ["finetune"]
    ft = lineage_model(engine, world.digests["ft-v1"])["results"][0]
    assert [b["digest"] for b in ft["baseModels"]] == [world.digests["base-v1"]]
    assert {(d["name"], d["role"]) for d in ft["datasets"]} == {
        ("reviews", "train"), ("census", "evaluate")}
    assert ft["model"]["stage"] is None and ft["stageHistory"] == []
    with pytest.raises(NotFoundError):
        lineage_model(engine, world.ref("nope"))


def test_reindex_fetches_only_models_whose_referrers_changed(world: World,
                                                             db_url: str) -> None:
    engine = connect(db_url)
    first = crawl(engine, [world.source], policy=world.policy)
    assert (first.indexed, first.unchanged) == (3, 0)
    again = crawl(engine, [world.source], policy=world.policy)
    assert (again.indexed, again.unchanged, again.attestations) == (0, 3, 0)
    world.attach("base-v1", evaluation(world.digests["base-v1"],
                                       {"name": "reviews", "digest": {"sha256": "7e" * 32}}),
                 "evaluator")
    promote_staging(world, "ft-v1")
    third = crawl(engine, [world.source], policy=world.policy)
    assert (third.indexed, third.unchanged) == (2, 1)
    assert {n for n, r, v in _models(lineage_dataset(engine, "reviews")) if v} == {
        "finetune", "base"}
    assert sorted(m["name"] for m in search(engine, stage="staging")) == ["base", "finetune"]


def test_removed_tag_removes_its_model_from_the_answers(world: World, db_url: str) -> None:
    from modelseal.oci.image_layout import LayoutStore

    engine = connect(db_url)
    crawl(engine, [world.source], policy=world.policy)
    store = LayoutStore(world.oci)
    doc = json.loads((world.oci / "index.json").read_text())
    doc["manifests"] = [m for m in doc["manifests"]
                        if (m.get("annotations") or {}).get(
                            "org.opencontainers.image.ref.name") != "evil-v1"]
    (world.oci / "index.json").write_text(json.dumps(doc))
    assert store.resolve("evil-v1") is None
    report = crawl(engine, [world.source], policy=world.policy)
    assert report.removed == 1
    assert "evil" not in {n for n, _, _ in _models(lineage_dataset(engine, "census"))}


def test_a_tampered_manifest_is_left_out_with_its_reason_and_the_rest_is_indexed(
        world: World, db_url: str) -> None:
    from sqlalchemy import select

    from modelseal.index.schema import models

    hexd = world.digests["evil-v1"].partition(":")[2]
    blob = world.oci / "blobs" / "sha256" / hexd
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes().replace(b"evil", b"nice"))
    engine = connect(db_url)
    report = crawl(engine, [world.source], policy=world.policy)
    assert (report.models, report.indexed) == (3, 2)
    assert {n for n, _, _ in _models(lineage_dataset(engine, "census"))} == {"base", "finetune"}
    with engine.connect() as conn:
        row = conn.execute(select(models).where(
            models.c.digest == world.digests["evil-v1"])).one()
    assert row.evidence_key is None and row.stage_basis.startswith("not indexed")
    # retried on the next run (no evidence key), still refused
    assert crawl(engine, [world.source], policy=world.policy).unchanged == 2


def test_without_policy_nothing_is_verified_and_each_answer_says_why(world: World,
                                                                      db_url: str) -> None:
    engine = connect(db_url)
    crawl(engine, [world.source])
    ans = lineage_dataset(engine, "census")
    assert len(ans["models"]) == 3 and ans["verified"] == 0
    assert all(m["reason"] and "policy" in m["reason"] for m in ans["models"])
    assert all(m["model"]["stage"] is None for m in ans["models"])
    # the same referrers judged under a policy are fetched again, not taken from the cache
    report = crawl(engine, [world.source], policy=world.policy)
    assert report.indexed == 3
    assert lineage_dataset(engine, "census")["verified"] == 2


def test_search_filters_by_name_stage_signer_type_and_time(world: World, db_url: str) -> None:
    engine = connect(db_url)
    crawl(engine, [world.source], policy=world.policy)
    names = lambda rows: [r["name"] for r in rows]  # noqa: E731
    assert names(search(engine, name="fine*")) == ["finetune"]
    assert names(search(engine, stage="staging")) == ["base"]
    assert sorted(names(search(engine, signer="trainer"))) == ["base", "finetune"]
    assert names(search(engine, signer="evaluator",
                        predicate_type="https://in-toto.io/attestation/test-result/v0.1")) == [
        "finetune"]
    # mallory's signature did not verify: only an explicit opt-in matches it
    assert search(engine, predicate_type="https://slsa.dev/provenance/v1", name="evil") == []
    assert names(search(engine, predicate_type="https://slsa.dev/provenance/v1", name="evil",
                        verified_only=False)) == ["evil"]
    assert search(engine, signer="trainer", until="2000-01-01") == []
    assert len(search(engine, signer="trainer", since="2000-01-01")) == 2


def test_dropping_the_database_and_rebuilding_gives_identical_answers(world: World,
                                                                      db_url: str) -> None:
    engine = connect(db_url)
    crawl(engine, [world.source], policy=world.policy)
    queries = (["census", CENSUS, "reviews", REVIEWS],
               [world.ref(t) for t in ("base-v1", "ft-v1", "evil-v1")])
    before = every_answer(engine, *queries)
    drop_all(engine)
    engine = connect(db_url)
    assert search(engine, verified_only=False) == []
    crawl(engine, [world.source], policy=world.policy)
    assert every_answer(engine, *queries) == before


def test_index_and_lineage_commands_speak_json(world: World, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cli.sqlite'}"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "modelseal.cli", *args], text=True,
                              capture_output=True, timeout=120)

    r = run("index", world.source, "--db", db, "--policy", str(world.policy), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["verified"] == 4  # mallory's provenance is not
    r = run("lineage", "--dataset", "census", "--db", db, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["verified"] == 2
    r = run("lineage", "--model", world.ref("ft-v1"), "--db", db, "--json")
    assert json.loads(r.stdout)["results"][0]["baseModels"][0]["name"] == "base"
    r = run("search", "--stage", "staging", "--db", db, "--json")
    assert [m["name"] for m in json.loads(r.stdout)["models"]] == ["base"]
    r = run("lineage", "--model", world.ref("missing"), "--db", db, "--json")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    r = run("lineage", "--db", db)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = run("index", world.source, "--db", "mysql://x")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = run("lineage", "--dataset", "census", "--db", "postgresql://nobody@127.0.0.1:1/none")
    assert r.returncode == 3 and "Traceback" not in r.stderr  # unreachable database
    r = run("lineage", "--dataset", "census", "--db", db)  # the human table
    assert r.returncode == 0 and "trainer" in r.stdout


def test_index_crawls_a_registry_repository(world: World, registry: object,
                                            tmp_path: Path) -> None:
    from modelseal.copy import copy as copy_model  # copy with every referrer
    from modelseal.oci import open_store
    from modelseal.refs import parse_ref

    host = registry.host  # type: ignore[attr-defined]
    for tag in ("base-v1", "ft-v1"):
        src = parse_ref(world.ref(tag))
        dst = parse_ref(f"{host}/models/zoo:{tag}")
        copy_model(open_store(src), src, open_store(dst), dst)
    engine = connect(f"sqlite:///{tmp_path / 'reg.sqlite'}")
    first = crawl(engine, [f"{host}/models/zoo"], policy=world.policy)
    assert (first.models, first.indexed) == (2, 2)
    assert {n for n, _, v in _models(lineage_dataset(engine, "census")) if v} == {
        "base", "finetune"}
    assert crawl(engine, [f"{host}/models/zoo"], policy=world.policy).unchanged == 2
    both = crawl(engine, [f"{host}/models/zoo", world.source], policy=world.policy)
    assert both.sources == [f"{host}/models/zoo", f"oci:{world.oci.resolve()}"]
    repos = {m["model"]["repo"] for m in lineage_dataset(engine, CENSUS)["models"]}
    assert len(repos) == 2


def test_an_index_of_schema_version_1_is_migrated_in_place(db_url: str) -> None:
    from sqlalchemy import create_engine, inspect, select

    from modelseal.index import schema

    raw = create_engine(schema.engine_url(db_url))
    with raw.begin() as conn:  # what a modelseal of schema version 1 left behind
        schema.migrations_table.create(conn)
        schema._m1(conn)
        schema.dependencies_uri.drop(conn)
        conn.execute(schema.migrations_table.insert().values(version=1, applied_at="x"))
    engine = connect(db_url)
    with engine.connect() as conn:
        versions = list(conn.execute(select(schema.migrations_table.c.version)).scalars())
    assert sorted(versions) == list(range(1, schema.SCHEMA_VERSION + 1))
    names = {i["name"] for i in inspect(engine).get_indexes("dependencies")}
    assert "ix_dependencies_uri" in names
    connect(db_url)  # idempotent
