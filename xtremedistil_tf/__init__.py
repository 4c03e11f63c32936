"""xtremedistil_tf: distil multilingual NER teachers into small, fast TensorFlow students."""

import os

# The user's own TensorFlow C++ log level, if any (`startup.quiet_tensorflow` keeps it).
USER_TF_CPP_MIN_LOG_LEVEL = os.environ.get("TF_CPP_MIN_LOG_LEVEL")

# Hugging Face TF classes are tf-keras (Keras 2) layers: this must be set before TensorFlow is
# imported anywhere, and the package is always imported before TensorFlow by our entry points.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
