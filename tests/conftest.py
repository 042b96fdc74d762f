"""Shared fixtures: tiny random-weight GGUF models written once per test session.

oracle: vocab a, 2 layers, seed 1. close drafter: the oracle's weights plus 5% noise
(agrees most of the time). far drafter: vocab a, 1 layer, other seed (rarely agrees).
other vocab: vocab b (a different tokenizer, for the cross-tokenizer path).
"""

import pytest

from edgespec.testing.tiny_gguf import write_tiny_gguf


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-gguf")


@pytest.fixture(scope="session")
def tiny_oracle_path(tiny_dir):
    return write_tiny_gguf(tiny_dir / "oracle.gguf", vocab="a", n_layer=2, seed=1)


@pytest.fixture(scope="session")
def tiny_drafter_close_path(tiny_dir):
    return write_tiny_gguf(tiny_dir / "drafter-close.gguf", vocab="a", n_layer=2, seed=1, noise=0.05)


@pytest.fixture(scope="session")
def tiny_drafter_path(tiny_dir):
    return write_tiny_gguf(tiny_dir / "drafter-far.gguf", vocab="a", n_layer=1, n_embd=32, n_ff=64, seed=2)


@pytest.fixture(scope="session")
def tiny_other_vocab_path(tiny_dir):
    return write_tiny_gguf(tiny_dir / "other-vocab.gguf", vocab="b", n_layer=1, seed=3)
