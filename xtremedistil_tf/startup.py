"""What a command does before its work: TensorFlow imported quietly, and one line on the CPU.

TensorFlow prints start-up lines on every machine without a GPU ("Could not find cuda drivers",
"failed call to cuInit: ... UNKNOWN ERROR (303)", "This TensorFlow binary is optimized to use
...", "oneDNN custom operations are on ..."). Some are written by C++ code before logging is
set up, so `TF_CPP_MIN_LOG_LEVEL` cannot hide them; `quiet_tensorflow` imports TensorFlow and
initialises its devices with file descriptor 2 sent to a temporary file, then writes back every
line of it that is not one of those. Every entry point calls it before anything imports
TensorFlow; `--verbosity=1` (absl's flag, also `-v 1`; argparse commands accept the same)
leaves all of it in place. Library code never calls this: importing the package changes only
environment defaults (see `xtremedistil_tf/__init__.py`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence

# One glog/absl-format line: severity, date, time, thread, file:line.
_LOG_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ ([\w.]+):\d+\] ")
# Error lines that only say that there is no GPU (or that a plug-in registered twice).
_NOISE_ERRORS = re.compile(r"cuInit|cuda_platform|Unable to register cu(DNN|FFT|BLAS) factory"
                           r"|computation placer already registered|TF-TRT Warning")
_NOISE_LINES = (
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called"),
    # The second line of cpu_feature_guard's message.
    re.compile(r"^To enable the following instructions: .* rebuild TensorFlow with"),
)
# Python packages whose warnings (DeprecationWarning, UserWarning, ...) are start-up noise.
_NOISY_MODULES = r"(tensorflow|tf_keras|keras|tensorflow_text|transformers|google\.protobuf)(\.|$)"

# CPU flags (/proc/cpuinfo) that decide which kernels oneDNN and Eigen pick.
CPU_FEATURES = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16",
                "amx_tile")


def is_noise(line: str) -> bool:
    """True for a TensorFlow start-up line: an INFO or WARNING log line, a no-GPU error line,
    or absl's note about logging before it is initialised."""
    match = _LOG_LINE.match(line)
    if match:
        return match.group(1) in "IW" or bool(_NOISE_ERRORS.search(line))
    return any(p.match(line) for p in _NOISE_LINES)


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """Sends file descriptor 2 (C++ and Python writes alike) to a temporary file; on exit writes
    back to the real stderr every line of it that `is_noise` does not drop, in order."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().decode("utf-8", "replace").splitlines(True)
                    if not is_noise(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def verbosity_from_argv(argv: Sequence[str]) -> int | None:
    """The value of `--verbosity=N`, `--verbosity N`, `-v N`, `-v=N` or `-vN` in `argv` (the
    last one wins), or None when it is not there; for commands that must decide before parsing
    (a --verbosity inside a --flagfile is not seen here)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == "--":  # what follows is positional
            break
        name, eq, text = arg.lstrip("-").partition("=")
        if not arg.startswith("-"):
            continue
        if name in ("v", "verbosity"):
            if not eq:
                text = argv[i + 1] if i + 1 < len(argv) else ""
        elif arg.startswith("-v") and not arg.startswith("--") and name[1:].isdigit():
            text = name[1:]
        else:
            continue
        with contextlib.suppress(ValueError):
            value = int(text)
    return value


def add_verbosity_argument(parser) -> None:
    """`-v/--verbosity N` on an argparse command, as absl's flag on run_distil.py."""
    parser.add_argument("-v", "--verbosity", type=int, default=None,
                        help="1 or more: show TensorFlow's start-up and log lines "
                             "(hidden by default)")


def absl_verbosity() -> int | None:
    """absl's --verbosity when it was given on the command line (parsed flags), else None."""
    from absl import flags

    flag = flags.FLAGS["verbosity"]
    return flag.value if flags.FLAGS.is_parsed() and flag.present else None


def quiet_tensorflow(verbosity: int | None = None):
    """Imports TensorFlow for a command and returns it; quiet unless `verbosity` >= 1.

    Quiet: start-up lines dropped (see `filtered_stderr`), Python warnings from TensorFlow,
    Keras and transformers ignored, and the `tensorflow` and absl loggers at ERROR. A user's own
    `TF_CPP_MIN_LOG_LEVEL` is kept either way; `verbosity` >= 1 without one sets it to 0.
    Call it before anything else imports TensorFlow (later calls only set the loggers).
    """
    from absl import logging as absl_logging

    verbose = verbosity is not None and verbosity >= 1
    already = "tensorflow" in sys.modules
    if verbose and not already and not _user_set_log_level():
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    if verbose:
        absl_logging.set_verbosity(min(verbosity, 1))  # absl: 1 = DEBUG
    else:
        warnings.filterwarnings("ignore", module=_NOISY_MODULES)
        absl_logging.set_verbosity(absl_logging.ERROR)
    quiet = contextlib.nullcontext() if verbose or already else filtered_stderr()
    with quiet:
        import tensorflow as tf

        tf.config.list_physical_devices()  # device start-up (cuInit) happens here
    logging.getLogger("tensorflow").setLevel(logging.DEBUG if verbose else logging.ERROR)
    return tf


def _user_set_log_level() -> bool:
    import xtremedistil_tf

    return xtremedistil_tf.USER_TF_CPP_MIN_LOG_LEVEL is not None


def cpu_features(cpuinfo: str | None = None) -> list[str]:
    """The `CPU_FEATURES` this CPU has, from /proc/cpuinfo's first `flags` line ([] elsewhere)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            return []
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines()
                  if line.startswith("flags")), [])
    return [f for f in CPU_FEATURES if f in flags]


def onednn_enabled() -> bool | None:
    """Whether TensorFlow runs oneDNN kernels in this process (its own answer; None if unknown).

    TF_ENABLE_ONEDNN_OPTS=1/0 decides (importing xtremedistil_tf sets 1 unless the user set it);
    unset, TensorFlow turns oneDNN on for CPUs with AVX512_VNNI, AVX512_BF16 or AMX only."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return None
    return bool(_pywrap_util_port.IsMklEnabled())


def cpu_line() -> str:
    """One line: which CPU features TensorFlow can use, oneDNN on/off and why, thread counts."""
    import tensorflow as tf

    have = cpu_features()
    missing = [f for f in CPU_FEATURES if f not in have]
    onednn = onednn_enabled()
    import xtremedistil_tf

    env = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    if env is None:
        why = "TensorFlow's default for this CPU"
    elif xtremedistil_tf.USER_TF_ENABLE_ONEDNN_OPTS is None:
        why = "xtremedistil_tf's default; TF_ENABLE_ONEDNN_OPTS=0 for Eigen's kernels"
    else:
        why = f"TF_ENABLE_ONEDNN_OPTS={env}"
    state = {True: "on", False: "off", None: "unknown"}[onednn]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    intra = tf.config.threading.get_intra_op_parallelism_threads()
    inter = tf.config.threading.get_inter_op_parallelism_threads()

    def threads(n):
        return str(n) if n else f"{cores} (default)"

    gpus = len(tf.config.list_physical_devices("GPU"))
    return (f"cpu: {' '.join(have) or 'no AVX'}"
            + (f" (no {' '.join(missing)})" if missing and have else "")
            + f"; oneDNN {state} ({why}); threads intra-op {threads(intra)}, "
            f"inter-op {threads(inter)} of {cores} cores; GPUs {gpus}")
