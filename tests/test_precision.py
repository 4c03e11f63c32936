"""--mixed_precision: models computing in bfloat16 / float16 with float32 weights and outputs,
loss scaling for float16, and runs that train mixed but report float32."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from xtremedistil_tf import (
    config,
    data,
    features,
    models,
    objectives,
    precision,
    students,
    teacher_outputs,
    train,
)
from xtremedistil_tf.tagging import Tagger
from conftest import MODELS, SMOKE, run_distil

LABELS = ["O", "B-X", "I-X"]
DCFG = config.DataConfig(("train.conll",), ("dev.conll",), ("test.conll",))
IDS = {"input_ids": tf.constant([[2, 10, 60, 70, 3]]), "attention_mask": tf.ones((1, 5), tf.int32)}


def _teacher(mixed="none", like=None):
    """The tiny teacher built under `mixed`'s policy (with `like`'s weights when given)."""
    with precision.policy(mixed):
        model, _, _ = models.build_teacher(os.path.join(MODELS, "tiny_bert"), LABELS, 0.0)
    if like is not None:
        for mine, theirs in zip(model.weights, like.weights, strict=True):
            mine.assign(theirs)
    return model


def _student(teacher, tokenizer, mixed):
    with precision.policy(mixed):
        return students.build_student("l2-h16", teacher, len(LABELS), len(tokenizer),
                                      tokenizer.pad_token_id, 32, 0.0, False)


def _batches(tokenizer, logit_scale=1.0):
    sents = [data.Sentence(("John", "visited", "London"), ("B-X", "O", "B-X"))] * 4
    windows = features.make_windows(sents, tokenizer, {k: i for i, k in enumerate(LABELS)}, 32)
    target = logit_scale * np.random.default_rng(0).normal(size=(3, 3)).astype(np.float32)
    logits = [target for _ in windows]  # the same sentence, the same targets: learnable
    return features.make_batches(windows, 4, 32, 0, {"teacher_logits": logits})


def _feed(batch):
    return {k: tf.constant(batch[k]) for k in objectives.batch_keys("logits")}


def test_the_policy_is_restored_and_bad_values_are_refused():
    before = tf.keras.mixed_precision.global_policy().name
    with precision.policy("bfloat16"):
        assert tf.keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    assert tf.keras.mixed_precision.global_policy().name == before
    with pytest.raises(ValueError, match="--mixed_precision=int8: use one of none"):
        with precision.policy("int8"):
            pass
    with pytest.raises(ValueError, match="--mixed_precision=fp8: use one of"):
        config.RunConfig(DCFG, config.TeacherConfig(model="t"), config.StudentConfig(),
                         config.DistilConfig(), mixed_precision="fp8")


@pytest.mark.parametrize("mixed, dtype", [("bfloat16", "bfloat16"), ("float16", "float16")])
def test_mixed_models_keep_float32_weights_and_return_float32(mixed, dtype):
    reference = _teacher()
    model = _teacher(mixed, like=reference)
    assert model.compute_dtype == dtype
    assert {w.dtype for w in model.weights} == {tf.float32}  # the same checkpoints
    out = model(IDS, output_hidden_states=True)
    assert out["logits"].dtype == tf.float32
    assert {h.dtype for h in out["hidden_states"]} == {tf.float32}
    expected = reference(IDS)["logits"].numpy()
    got = out["logits"].numpy()
    assert not np.array_equal(got, expected)  # it did compute in low precision
    np.testing.assert_allclose(got, expected, atol=0.05 * np.abs(expected).max())


def test_mixed_training_follows_float32_training_float16_with_loss_scaling(tiny_tokenizer):
    teacher, batch = _teacher(), _feed(_batches(tiny_tokenizer)[0])
    losses = {}
    for mixed in ("none", "bfloat16", "float16"):
        student = _student(teacher, tiny_tokenizer, mixed)
        if mixed != "none":  # the float32 student's start
            for mine, theirs in zip(student.weights, start, strict=True):
                mine.assign(theirs)
        start = [w.numpy() for w in student.weights]
        variables = student.trainable_variables
        with precision.policy(mixed):
            optimizer, _ = train.make_optimizer(variables, 1e-2, 100, 0.0, 0.0)
        scaled = isinstance(optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
        assert scaled == (mixed == "float16")
        step = train.make_train_step(student, "logits", objectives.LossSettings(), variables,
                                     optimizer)
        losses[mixed] = [float(step(batch)[0]) for _ in range(30)]
    for mixed, curve in losses.items():
        assert curve[-1] < 0.5 * curve[0], (mixed, curve[0], curve[-1])
        gap = np.abs(np.subtract(curve, losses["none"])).max()
        assert gap < 0.1 * losses["none"][0], (mixed, gap)  # it tracks float32 training


def test_float16_overflow_skips_the_step_and_halves_the_scale_not_the_learning_rate(
        tiny_tokenizer):
    """Huge targets overflow float16 gradients at the loss scale: the LossScaleOptimizer skips
    that update and halves its scale; --skip_nonfinite_batches (for NaN losses) is not spent."""
    student = _student(_teacher(), tiny_tokenizer, "float16")
    variables = student.trainable_variables
    with precision.policy("float16"):
        optimizer, schedule = train.make_optimizer(variables, 1e-3, 100, 0.0, 0.0)
    step = train.make_train_step(student, "logits", objectives.LossSettings(), variables,
                                 optimizer, skip_nonfinite=3)
    before = [v.numpy().copy() for v in variables]
    scale = float(optimizer.loss_scale)
    loss = float(step(_feed(_batches(tiny_tokenizer, logit_scale=1e4)[0]))[0])
    assert np.isfinite(loss)  # only the scaled gradients overflowed
    assert float(optimizer.loss_scale) == scale / 2
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, variables))
    assert float(schedule.scale) == 1.0


def test_teacher_cache_key_tells_mixed_precision_outputs_apart(tiny_tokenizer):
    reference = _teacher()
    sentences = [data.Sentence(("John", "visited", "London"), ("B-X", "O", "B-X"))]
    dcfg = DCFG
    keys = {mixed: teacher_outputs.cache_key(
        Tagger(_teacher(mixed, like=reference), tiny_tokenizer, dcfg, LABELS), sentences, dcfg)
        for mixed in ("none", "bfloat16")}
    assert keys["none"] != keys["bfloat16"]
    again = Tagger(_teacher(like=reference), tiny_tokenizer, dcfg, LABELS)
    assert teacher_outputs.cache_key(again, sentences, dcfg) == keys["none"]


def test_warns_where_no_hardware_speeds_it_up():
    assert "emulates bfloat16" in precision.hardware_warning("bfloat16", ["avx2"], gpus=0)
    assert precision.hardware_warning("bfloat16", ["avx512f", "avx512_bf16"], gpus=0) is None
    assert precision.hardware_warning("bfloat16", ["amx_bf16"], gpus=0) is None
    assert precision.hardware_warning("bfloat16", [], gpus=1) is None
    assert "without a GPU" in precision.hardware_warning("float16", ["amx_bf16"], gpus=0)
    assert precision.hardware_warning("float16", [], gpus=1) is None
    assert precision.hardware_warning("none", [], gpus=0) is None


def test_a_mixed_run_reports_float32_models_and_resumes_only_as_it_trained(tmp_path):
    # (select: weight selection measures the teacher in float32 before the student trains)
    args = (SMOKE, f"--output_dir={tmp_path}/run", "--export_formats=none",
            "--student_init=select")
    proc = run_distil(*args, "--mixed_precision=bfloat16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mixed precision: training in bfloat16" in proc.stderr
    with open(tmp_path / "run" / "metrics.json") as f:
        doc = json.load(f)
    assert doc["mixed_precision"] == "bfloat16"
    assert doc["teacher"]["compute_dtype"] == doc["student"]["compute_dtype"] == "float32"
    again = run_distil(*args)  # float32 now: not the run on disk
    assert again.returncode != 0
    assert "mixed_precision: bfloat16 -> none" in again.stderr
