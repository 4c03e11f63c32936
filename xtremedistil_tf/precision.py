"""Mixed-precision training (`--mixed_precision`).

`bfloat16` (CPUs with AVX512_BF16 or AMX, recent GPUs and TPUs) and `float16` (GPUs) build the
models under Keras' `mixed_bfloat16` / `mixed_float16` policy while they train: the variables
stay float32 (the same checkpoints and exports), matmuls and activations run in the low
precision. The models' outputs are cast back to float32 (`TokenClassifier.call`), so every loss
is computed in float32. float16 training scales the loss (`LossScaleOptimizer`, see
`train.make_optimizer`): its gradients would otherwise underflow. bfloat16 has float32's
exponent range and needs no scaling.

What a run reports is float32: after training, the pipeline rebuilds teacher and student from
their saved weights in float32 and scores and times those (`pipeline._run_phases`), the models
the export writes.
"""

from __future__ import annotations

import contextlib

from xtremedistil_tf.config import MIXED_PRECISION as MIXED  # (sets up Keras 2 first)

import tensorflow as tf  # noqa: E402  (after the package's environment set-up)
_POLICY = {"none": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
# CPU features with bfloat16 matmul units (`startup.cpu_features` names).
BF16_CPU = ("avx512_bf16", "amx_bf16")


@contextlib.contextmanager
def policy(mixed: str):
    """Models built inside use `mixed`'s Keras policy; the previous policy is restored after."""
    if mixed not in _POLICY:
        raise ValueError(f"--mixed_precision={mixed}: use one of {', '.join(MIXED)}")
    keras = tf.keras
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(_POLICY[mixed])
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def scales_loss() -> bool:
    """Whether models built now train with loss scaling (the float16 policy is in force)."""
    return tf.keras.mixed_precision.global_policy().name == "mixed_float16"


def float32(x):
    """`x` (a tensor, or a nest of them) with floating tensors cast to float32."""
    def cast(t):
        return tf.cast(t, tf.float32) if t.dtype.is_floating and t.dtype != tf.float32 else t
    return tf.nest.map_structure(cast, x)


def hardware_warning(mixed: str, cpu_features, gpus: int) -> str | None:
    """A warning when `mixed` has no hardware to speed it up here (it still runs, slower)."""
    if mixed == "bfloat16" and not gpus and not any(f in cpu_features for f in BF16_CPU):
        return ("warning: --mixed_precision=bfloat16 on a CPU without AVX512_BF16 or AMX: "
                "TensorFlow emulates bfloat16 matmuls, which is usually slower than float32; "
                "drop the flag on this machine")
    if mixed == "float16" and not gpus:
        return ("warning: --mixed_precision=float16 without a GPU: CPUs have no fast float16 "
                "matmuls; use bfloat16 on CPUs with AVX512_BF16 or AMX, or drop the flag")
    return None
