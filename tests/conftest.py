"""Shared fixtures: the tiny committed model folders (see scripts/make_test_models.py)."""

import contextlib
import io
import os
import subprocess
import sys

# The suite never reaches the Hugging Face hub: every model is a local folder (subprocesses too).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import xtremedistil_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import pytest

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
MODELS = os.path.join(FIXTURES, "models")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = "--flagfile=flags/smoke.cfg"


@contextlib.contextmanager
def in_repo(stdout: io.StringIO, stderr: io.StringIO):
    """Runs the block from the repository root (as the commands are run) with its stdout and
    stderr captured; the working directory is restored afterwards."""
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            yield
    finally:
        os.chdir(cwd)


def run_distil(*args: str, fresh_process: bool = False, env: dict | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """`python run_distil.py ARGS` from the repository root -> returncode, stdout, stderr.

    By default in this process: TensorFlow is loaded once and what TensorFlow caches between
    models (autograph's conversions) is reused, so a smoke run takes seconds instead of a fresh
    interpreter's start-up plus its first tracing. The flags are parsed exactly as on the
    command line (flag files, later flags overriding earlier ones) and reset afterwards; an
    exception that `run_distil.main` does not turn into a one-line error propagates, so the test
    shows its traceback. `fresh_process` (or `env`) runs a real interpreter instead: for what
    only a process can show (being killed, environment variables read at start-up, tf.distribute
    devices, TensorFlow's own start-up output).
    """
    if fresh_process or env is not None:
        return subprocess.run([sys.executable, "run_distil.py", *args], capture_output=True,
                              text=True, cwd=REPO, timeout=timeout,
                              env=None if env is None else {**os.environ, **env})
    import run_distil as cli
    from absl import flags

    out, err = io.StringIO(), io.StringIO()
    with in_repo(out, err):
        flags.FLAGS.unparse_flags()
        try:
            flags.FLAGS(["run_distil.py", *args])
        except flags.Error as e:  # what absl's app.run prints before exiting with 1
            print(f"FATAL Flags parsing error: {e}", file=sys.stderr)
            returncode = 1
        else:
            returncode = cli.main(["run_distil.py"])
        finally:
            flags.FLAGS.unparse_flags()
    return subprocess.CompletedProcess(["run_distil.py", *args], returncode, out.getvalue(),
                                       err.getvalue())


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
