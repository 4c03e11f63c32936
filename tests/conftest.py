"""Shared fixtures: the tiny committed model folders (see scripts/make_test_models.py)."""

import os

import xtremedistil_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import pytest

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
MODELS = os.path.join(FIXTURES, "models")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fixture_path(*parts: str) -> str:
    return os.path.join(FIXTURES, *parts)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from xtremedistil_tf import models

    return models.load_tokenizer(os.path.join(MODELS, "tiny_bert"))


@pytest.fixture(scope="session", autouse=True)
def _quiet_transformers():
    import transformers

    transformers.logging.set_verbosity_error()
