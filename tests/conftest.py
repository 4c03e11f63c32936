"""Shared fixtures: the tiny committed model folders (see scripts/make_test_models.py)."""

import os

# The suite never reaches the Hugging Face hub: every model is a local folder (subprocesses too).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import xtremedistil_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import pytest

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
MODELS = os.path.join(FIXTURES, "models")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fixture_path(*parts: str) -> str:
    return os.path.join(FIXTURES, *parts)


def varied_tagger(folder: str, labels: list[str]):
    """`folder`'s encoder with a fresh softmax head for `labels` (`new_head`, also on a ready
    token classifier), its classifier scaled up so that random weights tag varied labels;
    returns (model, tokenizer)."""
    from xtremedistil_tf import models

    tok = models.load_tokenizer(folder)
    model, _, _ = models.build_teacher(folder, labels, 0.1, special_ids=tok.all_special_ids,
                                       new_head=True)
    model.classifier.kernel.assign(model.classifier.kernel * 300.0)
    return model, tok


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from xtremedistil_tf import models

    return models.load_tokenizer(os.path.join(MODELS, "tiny_bert"))


@pytest.fixture(scope="session", autouse=True)
def _quiet_transformers():
    import transformers

    transformers.logging.set_verbosity_error()


@pytest.fixture(scope="session")
def hub_models(tmp_path_factory):
    """Tiny random-weight twins of jplu/tf-xlm-r-ner-40-lang and
    microsoft/xtremedistil-l6-h256-uncased with the hub's exact file layouts (hub_layouts.py):
    {"xlmr_ner": folder, "xtremedistil": folder}."""
    import tensorflow as tf

    import hub_layouts

    tf.keras.utils.set_random_seed(0)
    base = tmp_path_factory.mktemp("hub")
    return {
        "xlmr_ner": hub_layouts.make_xlmr_ner(str(base / "tf-xlm-r-ner-40-lang"), FIXTURES),
        "xtremedistil": hub_layouts.make_xtremedistil(
            str(base / "xtremedistil-l6-h256-uncased"),
            os.path.join(MODELS, "tiny_bert", "vocab.txt")),
    }
