"""xtremedistil_tf: distil multilingual NER teachers into small, fast TensorFlow students."""

import os


def _default_env(name: str, value: str) -> str | None:
    """Sets environment variable `name` to `value` unless it is set, marking the value as ours
    (`XTREMEDISTIL_DEFAULT_<name>`); returns the user's own value, or None. A value this package
    set in a parent process (inherited by the run_distil.py runs that sweep.py starts) is not
    the user's."""
    marker = f"XTREMEDISTIL_DEFAULT_{name}"
    user = None if os.environ.get(marker) == os.environ.get(name) else os.environ.get(name)
    if name not in os.environ:
        os.environ[name] = os.environ[marker] = value
    return user


# Hugging Face TF classes are tf-keras (Keras 2) layers: this must be set before TensorFlow is
# imported anywhere, and the package is always imported before TensorFlow by our entry points.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ log level: the user's, or None (`--verbosity=1` may then lower ours; see
# `startup.quiet_tensorflow`).
USER_TF_CPP_MIN_LOG_LEVEL = _default_env("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN kernels everywhere. Unset, TensorFlow uses them only on CPUs with AVX512_VNNI,
# AVX512_BF16 or AMX and Eigen's elsewhere; on an AVX2-only CPU oneDNN trains 1.3-1.6x faster
# (docs/robustness.md). A value the user set (0: Eigen) is kept.
USER_TF_ENABLE_ONEDNN_OPTS = _default_env("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"
