"""Where the shared test data lives: ``../shared/testdata`` beside the repository checkout."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTDATA = REPO.parent / "shared" / "testdata"
if not TESTDATA.is_dir():  # a checkout elsewhere on this workplace's machines
    TESTDATA = Path("/work/shared/testdata")
SIGSTORE = TESTDATA / "sigstore"
MODELPACK_SCHEMA = TESTDATA / "modelpack" / "config-schema.json"
