"""One directory digest and one directory walk.

A dataset directory gets the same digest in SLSA provenance, in the ML-BOM, in the evidence
index and from a model_signing Statement over its files (``modelseal-dirhash-v1``: sha256 of
``sha256sum`` output of the sorted file list), so lineage joins them; and every command walks
a directory with the same symlink and exclude policy (``_util.fs.walk_files``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from modelseal._util.fs import DEFAULT_EXCLUDES, walk_files
from modelseal.attest.model_signing import model_signing_statement, statement_dir_digest
from modelseal.attest.statement import provenance_predicate, statement
from modelseal.attest.steps import collect_files, describe_path
from modelseal.bom.build import build_bom
from modelseal.bom.inputs import HashedModelFile, ModelInfo, dataset_from_path
from modelseal.digest import DIR_DIGEST_SCHEME, dir_digest, hash_dir
from modelseal.errors import InputError
from modelseal.formats import BOM_PREDICATE, SLSA_PROVENANCE_PREDICATE
from modelseal.index.extract import SCHEME_LISTING, dependencies
from paths import missing_tool


def _dataset(root: Path) -> Path:
    d = root / "census"
    (d / "split" / "a-b").mkdir(parents=True)
    (d / "train.csv").write_text("age,income\n39,77516\n")
    (d / "Z.txt").write_text("upper case sorts first\n")
    (d / "split" / "a-b" / "x.csv").write_text("x\n")
    (d / "split" / "a.csv").write_text("a\n")
    # what every walk leaves out: git metadata, attestations, caches
    (d / ".git").mkdir()
    (d / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (d / ".modelseal" / "attestations").mkdir(parents=True)
    (d / ".modelseal" / "attestations" / "t.intoto.sigstore.json").write_text("{}")
    (d / "__pycache__").mkdir()
    (d / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"\0")
    return d


def test_directory_digest_is_sha256sum_of_the_sorted_file_list(tmp_path: Path) -> None:
    """Anyone can recompute the digest with coreutils: `sha256sum` of the sorted files."""
    if shutil.which("sha256sum") is None:
        missing_tool("coreutils sha256sum")
    d = _dataset(tmp_path)
    found = hash_dir(d)
    names = [f.relpath for f in found.files]
    assert names == ["Z.txt", "split/a-b/x.csv", "split/a.csv", "train.csv"]  # byte order
    out = subprocess.run(["sha256sum", "--", *names], cwd=d, capture_output=True,
                         check=True, env={**os.environ, "LC_ALL": "C"}).stdout
    assert found.sha256 == hashlib.sha256(out).hexdigest()
    # the format is pinned: a one-file tree, worked out by hand
    assert dir_digest([("w.bin", "sha256:" + "ab" * 32)]) == hashlib.sha256(
        ("ab" * 32 + "  w.bin\n").encode()).hexdigest()


def test_provenance_bom_index_and_model_signing_give_a_dataset_directory_one_digest(
        tmp_path: Path) -> None:
    d = _dataset(tmp_path)
    rd = describe_path("census", base_dir=tmp_path)
    ds = dataset_from_path(d, "census")
    files = [(f.relpath, f.sha256) for f in hash_dir(d).files]
    ms = model_signing_statement(files, model_name="census")
    assert rd["digest"]["sha256"] == ds.sha256 == statement_dir_digest(ms)
    assert rd["annotations"] == {"files": 4, "hashScheme": DIR_DIGEST_SCHEME}
    assert ds.files == 4 and ds.hash_scheme == DIR_DIGEST_SCHEME

    # the index sees one dataset node: same digest, same scheme, from both predicates
    prov = statement([("model.bin", "cd" * 32)], SLSA_PROVENANCE_PREDICATE,
                     provenance_predicate(datasets=[rd]))
    bom = build_bom(ModelInfo("m", files=[HashedModelFile("model.bin", "cd" * 32, 1)]),
                    datasets=[ds])
    bom_st = statement([("model.bin", "cd" * 32)], BOM_PREDICATE, bom)
    got = {(x.role, x.digest, x.scheme) for x in [*dependencies(prov), *dependencies(bom_st)]
           if x.kind == "dataset"}
    assert got == {("train", f"sha256:{ds.sha256}", DIR_DIGEST_SCHEME),
                   ("bom", f"sha256:{ds.sha256}", DIR_DIGEST_SCHEME)}


def test_a_directory_holding_one_file_is_described_as_a_directory(tmp_path: Path) -> None:
    """A directory is never mistaken for the file it holds: renaming the file changes it."""
    d = tmp_path / "one"
    d.mkdir()
    (d / "data.csv").write_text("x\n")
    rd = describe_path(d)
    assert rd["annotations"]["hashScheme"] == DIR_DIGEST_SCHEME
    assert rd["digest"]["sha256"] != hashlib.sha256(b"x\n").hexdigest()
    (d / "data.csv").rename(d / "labels.csv")
    assert describe_path(d)["digest"]["sha256"] != rd["digest"]["sha256"]


def test_directory_digest_refuses_a_newline_in_a_file_name(tmp_path: Path) -> None:
    """A name holding "\\n<hex>  b" would print the same lines as two files: refused."""
    h = hashlib.sha256(b"B").hexdigest()
    with pytest.raises(InputError, match="newline"):
        dir_digest([(f"a\n{h}  b", "00" * 32)])
    d = tmp_path / "d"
    d.mkdir()
    (d / "a\nb").write_text("x")
    with pytest.raises(InputError, match="newline"):
        hash_dir(d)


def test_directory_digest_refuses_a_path_listed_twice() -> None:
    with pytest.raises(InputError, match="twice"):
        dir_digest([("a", "00" * 32), ("a", "11" * 32)])


def test_index_reads_old_listing_digests_with_their_scheme() -> None:
    """Provenance signed before the unification keeps its (listing) scheme in the index."""
    old = {"name": "census", "digest": {"sha256": "ef" * 32},
           "annotations": {"files": 2, "digestOf": "canonical JSON list of name/sha256",
                           "kind": "dataset"}}
    st = statement([("m", "cd" * 32)], SLSA_PROVENANCE_PREDICATE, {
        "buildDefinition": {"buildType": "https://modelseal.dev/training/v1",
                            "externalParameters": {}, "resolvedDependencies": [old]},
        "runDetails": {"builder": {"id": "https://ci.example/runner"}}})
    (dep,) = dependencies(st)
    assert (dep.kind, dep.scheme) == ("dataset", SCHEME_LISTING)


# ---- the one walker --------------------------------------------------------------------------

def test_walk_leaves_out_git_attestations_and_caches_and_says_so(tmp_path: Path) -> None:
    d = _dataset(tmp_path)
    skipped: list[str] = []
    got = [f.relpath for f in walk_files(d, exclude=DEFAULT_EXCLUDES, excluded=skipped)]
    assert got == ["Z.txt", "split/a-b/x.csv", "split/a.csv", "train.csv"]
    assert sorted(skipped) == [".git", ".modelseal", "__pycache__"]


def test_walk_refuses_every_link_unless_following(tmp_path: Path) -> None:
    d = _dataset(tmp_path)
    (d / "alias.csv").symlink_to("train.csv")
    with pytest.raises(InputError, match="symbolic link"):
        walk_files(d)
    got = {f.relpath: f.size for f in walk_files(d, follow_symlinks=True)}
    assert got["alias.csv"] == got["train.csv"]  # recorded under its name, target's content


def test_walk_follows_a_directory_link_inside_the_root(tmp_path: Path) -> None:
    d = _dataset(tmp_path)
    (d / "again").symlink_to("split")
    got = [f.relpath for f in walk_files(d, follow_symlinks=True)]
    assert "again/a.csv" in got and "split/a.csv" in got


def test_walk_refuses_a_link_out_of_the_root_even_when_following(tmp_path: Path) -> None:
    """Following links never reads outside the tree: a link to /etc/passwd is refused."""
    d = _dataset(tmp_path)
    (d / "split" / "secret").symlink_to("/etc/passwd")
    with pytest.raises(InputError, match="outside"):
        walk_files(d, follow_symlinks=True)
    with pytest.raises(InputError, match="outside"):
        hash_dir(d)
    with pytest.raises(InputError, match="outside"):
        collect_files(["census"], base_dir=tmp_path)  # run's materials walk the same way


def test_walk_refuses_a_broken_link_and_a_fifo(tmp_path: Path) -> None:
    d = _dataset(tmp_path)
    (d / "gone").symlink_to(d / "nowhere")
    with pytest.raises(InputError, match="broken symlink"):
        walk_files(d, follow_symlinks=True)
    (d / "gone").unlink()
    os.mkfifo(d / "pipe")
    with pytest.raises(InputError, match="FIFO"):
        dataset_from_path(d)
