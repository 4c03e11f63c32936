"""xtremedistil_tf: distil multilingual NER teachers into small, fast TensorFlow students."""

import os

# TensorFlow's C++ log level as the user set it, or None. A level this package set in a parent
# process (marked, and inherited by run_distil.py runs that sweep.py starts) is not the user's,
# so `--verbosity=1` may still lower it there (see `startup.quiet_tensorflow`).
_OURS = "XTREMEDISTIL_DEFAULT_TF_CPP_MIN_LOG_LEVEL"
USER_TF_CPP_MIN_LOG_LEVEL = (None if os.environ.get(_OURS) == os.environ.get("TF_CPP_MIN_LOG_LEVEL")
                             else os.environ.get("TF_CPP_MIN_LOG_LEVEL"))

# Hugging Face TF classes are tf-keras (Keras 2) layers: this must be set before TensorFlow is
# imported anywhere, and the package is always imported before TensorFlow by our entry points.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
if "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = os.environ[_OURS] = "2"

# oneDNN kernels everywhere. Unset, TensorFlow uses them only on CPUs with AVX512_VNNI,
# AVX512_BF16 or AMX and Eigen's elsewhere; on an AVX2-only CPU oneDNN trains 1.3-1.6x faster
# (docs/robustness.md). A value the user set (0: Eigen) is kept; ours is marked as above.
_OURS_ONEDNN = "XTREMEDISTIL_DEFAULT_TF_ENABLE_ONEDNN_OPTS"
USER_TF_ENABLE_ONEDNN_OPTS = (
    None if os.environ.get(_OURS_ONEDNN) == os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    else os.environ.get("TF_ENABLE_ONEDNN_OPTS"))
if "TF_ENABLE_ONEDNN_OPTS" not in os.environ:
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = os.environ[_OURS_ONEDNN] = "1"

__version__ = "0.1.0"
