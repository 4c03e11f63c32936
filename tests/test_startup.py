"""Commands keep TensorFlow's start-up lines out of their output unless --verbosity asks."""

import os
import subprocess
import sys

import pytest

from conftest import REPO
from xtremedistil_tf import startup

NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796129307.557764    6370 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.",
    "E0000 00:00:1796129329.416994    6370 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    "I0000 00:00:1796129220.852853    5231 port.cc:153] oneDNN custom operations are on. You may "
    "see slightly different numerical results due to floating-point round-off errors.",
    "I0000 00:00:1796129160.007768    4878 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow "
    "with the appropriate compiler flags.",
    "W1201 12:44:32.483414 139841866226560 save_impl.py:68] Skipping full serialization",
]
KEPT = [
    "error: runs/x: no state.json",
    "E1201 12:44:32.483414 139841866226560 op_kernel.cc:68] OP_REQUIRES failed: real trouble",
    "F1201 12:44:32.483414 139841866226560 check.cc:1] Check failed",
    "Traceback (most recent call last):",
]
# What the start-up lines say on a machine without a GPU.
MARKERS = ("cuInit", "cudart", "oneDNN custom operations", "absl::InitializeLog",
           "cpu_feature_guard")


def test_noise_lines_are_told_from_real_ones():
    assert [line for line in NOISE if not startup.is_noise(line)] == []
    assert [line for line in KEPT if startup.is_noise(line)] == []


def test_filtered_stderr_drops_noise_written_to_the_file_descriptor(capfd):
    with startup.filtered_stderr():
        os.write(2, ("\n".join(NOISE[:3] + KEPT[:1] + NOISE[3:] + KEPT[1:]) + "\n").encode())
    err = capfd.readouterr().err
    assert err.splitlines() == KEPT


@pytest.mark.parametrize("argv, expected", [
    ([], None), (["--run_dir", "x"], None), (["--verbosity=1"], 1), (["--verbosity", "2"], 2),
    (["-v", "1"], 1), (["-v=1"], 1), (["--v=0"], 0), (["-v1"], 1), (["-v", "1", "-v", "0"], 0),
    (["-v"], None), (["--verbose"], None), (["--", "-v", "1"], None), (["-vx"], None),
])
def test_verbosity_from_argv(argv, expected):
    assert startup.verbosity_from_argv(argv) == expected


def test_cpu_features_from_cpuinfo():
    cpuinfo = ("processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_bf16 "
               "amx_tile\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert startup.cpu_features(cpuinfo) == ["avx", "avx2", "fma", "avx512f", "avx512_bf16",
                                             "amx_tile"]
    assert startup.cpu_features("") == []


def test_cpu_line_names_features_onednn_and_threads():
    line = startup.cpu_line()
    assert line.startswith("cpu: ") and "\n" not in line
    assert "oneDNN " in line and "threads intra-op " in line and "inter-op " in line


# (variable, the package's attribute holding the user's value, its default marker)
LOG_LEVEL = ("TF_CPP_MIN_LOG_LEVEL", "USER_TF_CPP_MIN_LOG_LEVEL",
             "XTREMEDISTIL_DEFAULT_TF_CPP_MIN_LOG_LEVEL")
ONEDNN = ("TF_ENABLE_ONEDNN_OPTS", "USER_TF_ENABLE_ONEDNN_OPTS",
          "XTREMEDISTIL_DEFAULT_TF_ENABLE_ONEDNN_OPTS")


@pytest.mark.parametrize("variable, env, user_value, value", [
    (LOG_LEVEL, {}, None, "2"),  # the package's default, marked as its own
    (LOG_LEVEL, {"TF_CPP_MIN_LOG_LEVEL": "1"}, "1", "1"),  # the user's, kept
    # Inherited from a parent that imported the package (sweep.py -> run_distil.py): not the
    # user's, so --verbosity may lower it; unless the user changed it since.
    (LOG_LEVEL, {"TF_CPP_MIN_LOG_LEVEL": "2", LOG_LEVEL[2]: "2"}, None, "2"),
    (LOG_LEVEL, {"TF_CPP_MIN_LOG_LEVEL": "0", LOG_LEVEL[2]: "2"}, "0", "0"),
    (ONEDNN, {}, None, "1"),  # oneDNN: ours, on every CPU
    (ONEDNN, {"TF_ENABLE_ONEDNN_OPTS": "0"}, "0", "0"),  # the user's, kept
    (ONEDNN, {"TF_ENABLE_ONEDNN_OPTS": "1", ONEDNN[2]: "1"}, None, "1"),  # inherited: ours
])
def test_the_users_own_tensorflow_settings_are_told_from_ours(variable, env, user_value, value):
    name, attribute, marker = variable
    clean = {k: v for k, v in os.environ.items() if k not in (name, marker)}
    out = subprocess.run(
        [sys.executable, "-c", f"import os, xtremedistil_tf as x; "
         f"print(x.{attribute}, os.environ['{name}'])"],
        cwd=REPO, env={**clean, **env}, capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(user_value), value]


def test_cpu_line_says_whose_onednn_choice_it_is(monkeypatch):
    import xtremedistil_tf

    # This process imported the package before TensorFlow: TensorFlow took the setting.
    assert startup.onednn_enabled() is (os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1")
    state = "on" if startup.onednn_enabled() else "off"
    monkeypatch.setattr(xtremedistil_tf, "USER_TF_ENABLE_ONEDNN_OPTS", None)
    assert f"; oneDNN {state} (xtremedistil_tf's default; TF_ENABLE_ONEDNN_OPTS=0 for " \
           "Eigen's kernels);" in startup.cpu_line()
    monkeypatch.setattr(xtremedistil_tf, "USER_TF_ENABLE_ONEDNN_OPTS", "0")
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert f"; oneDNN {state} (TF_ENABLE_ONEDNN_OPTS=0);" in startup.cpu_line()


def _export_command(tmp_path, *extra):
    # Imports TensorFlow (and starts its devices), then fails at once on a missing run folder.
    return subprocess.Popen(
        [sys.executable, "-m", "xtremedistil_tf.export", "--run_dir", str(tmp_path / "none"),
         *extra], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items()
             if k not in ("TF_CPP_MIN_LOG_LEVEL", "XTREMEDISTIL_DEFAULT_TF_CPP_MIN_LOG_LEVEL")})


def test_a_command_prints_only_its_own_lines_and_verbosity_brings_tensorflows_back(tmp_path):
    quiet, verbose = _export_command(tmp_path), _export_command(tmp_path, "-v", "1")
    out, err = quiet.communicate(timeout=300)
    v_out, v_err = verbose.communicate(timeout=300)
    assert quiet.returncode == 2 and verbose.returncode == 2, err + v_err
    assert out == "" and err.splitlines() == [
        f"error: {tmp_path / 'none'}: no state.json; give the --output_dir of a run_distil.py "
        "run"], err
    assert any(m in v_err for m in MARKERS), v_err
    assert err.splitlines()[-1] == v_err.splitlines()[-1]
