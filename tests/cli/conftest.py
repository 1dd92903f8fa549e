"""Fixtures of the command-line tests."""

import pytest

from helpers import write_mnist


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """A small MNIST-format data set (250 training, 40 test images)."""
    root = tmp_path_factory.mktemp("mnist")
    write_mnist(root, n_train=250, n_test=40, seed=3)
    return str(root)
