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

__version__ = "0.1.0"
