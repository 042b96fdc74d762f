"""Shared pytest fixtures for the whole suite.

Keep this file tidy: nothing autouse, a one-line docstring per fixture, and new
fixtures appended in a section of their own below.

Tiny random-weight GGUF models (edgespec/testing/tiny_gguf.py), written once per
session into a temporary folder in a few milliseconds each:

- ``tiny_oracle_path``: vocab a, 2 layers, n_embd 64, seed 1, F32;
- ``tiny_drafter_close_path``: the oracle's weights plus 5% noise: agrees with the
  oracle's greedy choice ~80% of the time (high acceptance, still some rejections);
- ``tiny_drafter_path``: vocab a, 1 layer, n_embd 32, seed 2: almost never agrees;
- ``tiny_other_vocab_path``: vocab b (another tokenizer), for the cross-tokenizer path;
- ``tiny_gguf``: a helper that writes (and caches) any other tiny model,
  e.g. ``tiny_gguf(vocab="a", seed=1, dtype="q8_0")``.
"""

import os
import tempfile

import pytest

from edgespec.drafters.history_index import HistoryIndex
from edgespec.testing.tiny_gguf import write_tiny_gguf


def pytest_configure(config):
    """The suite starts cold: a developer's saved draft-policy estimates never change a test's outcome, and
    the curves measured on the tests' models (under the suite's load) never reach the developer's cache;
    no generation starts from a prompt cache another test saved (test_generator_state turns it on)."""
    os.environ["EDGESPEC_POLICY_DIR"] = tempfile.mkdtemp(prefix="edgespec-policy-")
    os.environ["EDGESPEC_PROMPT_CACHE"] = "0"
    os.environ["EDGESPEC_CALIBRATION_DIR"] = tempfile.mkdtemp(prefix="edgespec-calibration-")


# --------------------------------------------------------------------------- tiny GGUF models


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """The session's folder of tiny models."""
    return tmp_path_factory.mktemp("tiny-gguf")


@pytest.fixture(scope="session")
def tiny_gguf(tiny_dir):
    """``tiny_gguf(**write_tiny_gguf_kwargs) -> Path``: one file per distinct set of arguments."""
    written = {}

    def make(**kwargs):
        key = repr(sorted(kwargs.items()))
        if key not in written:
            written[key] = write_tiny_gguf(tiny_dir / f"tiny-{len(written)}.gguf", **kwargs)
        return written[key]

    return make


@pytest.fixture(scope="session")
def tiny_oracle_path(tiny_dir):
    """Vocab a, 2 layers, seed 1: the oracle of the engine tests."""
    return write_tiny_gguf(tiny_dir / "oracle.gguf", vocab="a", n_layer=2, seed=1)


@pytest.fixture(scope="session")
def tiny_drafter_close_path(tiny_dir):
    """The oracle plus 5% weight noise: a drafter that is accepted most of the time."""
    return write_tiny_gguf(tiny_dir / "drafter-close.gguf", vocab="a", n_layer=2, seed=1, noise=0.05)


@pytest.fixture(scope="session")
def tiny_drafter_path(tiny_dir):
    """Vocab a, 1 layer, smaller, seed 2: a drafter that is almost always rejected."""
    return write_tiny_gguf(tiny_dir / "drafter-far.gguf", vocab="a", n_layer=1, n_embd=32, n_ff=64, seed=2)


@pytest.fixture(scope="session")
def tiny_other_vocab_path(tiny_dir):
    """Vocab b: a different tokenizer, for the cross-tokenizer drafter."""
    return write_tiny_gguf(tiny_dir / "other-vocab.gguf", vocab="b", n_layer=1, seed=3)


# --------------------------------------------------------------------------- history drafter


@pytest.fixture
def index():
    """An empty in-memory history index (no template reports), closed after the test."""
    idx = HistoryIndex(":memory:", seed_templates=False)
    yield idx
    idx.close()


# --------------------------------------------------------------------------- office server database


@pytest.fixture(params=["sqlite", "postgresql"])
def server_db_target(request, tmp_path):
    """Where a sync test's server database lives: a SQLite file, then a fresh PostgreSQL database
    (skipped, with the reason, when no PostgreSQL server is reachable)."""
    if request.param == "sqlite":
        yield tmp_path / "server.db"
        return
    from fieldlog_app.sync import pgtest

    reason = pgtest.unavailable()
    if reason:
        pytest.skip(reason)
    with pgtest.fresh_database() as url:
        yield url
