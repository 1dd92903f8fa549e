"""In CI the export and weight-file tests must run, not skip because a package is missing."""

import importlib
import os

import pytest


@pytest.mark.skipif(not os.environ.get("CI"), reason="only enforced in CI (CI=true)")
@pytest.mark.parametrize("module", ["onnx", "onnxruntime", "safetensors.numpy"])
def test_ci_has_what_the_deployment_tests_import(module):
    importlib.import_module(module)
