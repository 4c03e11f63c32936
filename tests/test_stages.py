"""The stage schedule, and which variables actually train in each stage."""

import dataclasses
import os

import numpy as np
import pytest

from xtremedistil_tf import config, features, models, objectives, stages, students, train
from conftest import MODELS

QUIET = train.LoopConfig(verbose=False)


def test_schedule_with_gradual_unfreezing():
    cfg = config.DistilConfig(gradual_unfreezing=True)
    schedule = stages.build_schedule(cfg, num_blocks=2, freeze_embeddings=False)
    assert [s.name for s in schedule] == [
        "representations", "logits/top0", "logits/top1", "logits/top2",
        "labels/top0", "labels/top1", "labels/top2"]
    rep = schedule[0]
    assert rep.data == "transfer" and rep.monitor == "dev_loss"
    assert set(rep.trainable) == {"embeddings", "block:0", "block:1", "projection"}
    assert schedule[1].trainable == ("head",)
    assert schedule[2].trainable == ("head", "block:1")
    assert schedule[3].trainable == ("head", "block:1", "block:0", "embeddings")
    assert all(s.data == "transfer" for s in schedule[1:4])
    assert all(s.data == "train" and s.objective == "labels" for s in schedule[4:])


def test_schedule_without_unfreezing_or_stages_and_frozen_embeddings():
    cfg = config.DistilConfig(stages=("logits", "labels"), gradual_unfreezing=False)
    schedule = stages.build_schedule(cfg, num_blocks=3, freeze_embeddings=True)
    assert [s.name for s in schedule] == ["logits", "labels"]
    assert "embeddings" not in schedule[0].trainable
    assert set(schedule[0].trainable) == {"head", "block:0", "block:1", "block:2"}


def test_stage_order_is_validated():
    with pytest.raises(ValueError, match="order"):
        config.DistilConfig(stages=("labels", "logits"))


@pytest.mark.parametrize("layer,expected", [
    ("middle", ((6,), (3,))), ("last", ((12,), (3,))), ("uniform", ((4, 8, 12), (1, 2, 3))),
    ("5", ((5,), (3,)))])
def test_representation_pairs(layer, expected):
    assert stages.representation_pairs(layer, 12, 3) == expected


def test_representation_layer_out_of_range():
    with pytest.raises(ValueError, match="0..12"):
        stages.representation_pairs("13", 12, 3)


@pytest.fixture(scope="module")
def tiny_student(tiny_tokenizer):
    teacher, _, _ = models.build_teacher(os.path.join(MODELS, "tiny_bert"), ["O", "B-X", "I-X"],
                                         0.0)
    student = students.build_student("l2-h16", teacher, 3, len(tiny_tokenizer),
                                   tiny_tokenizer.pad_token_id, 32, 0.0, False)
    return student


def _batches(tiny_tokenizer, n_hidden=1):
    from xtremedistil_tf import data

    sents = [data.Sentence(("John", "visited", "London"), ("B-X", "O", "B-X"))] * 4
    windows = features.make_windows(sents, tiny_tokenizer, {"O": 0, "B-X": 1, "I-X": 2}, 32)
    rng = np.random.default_rng(0)
    targets = {
        "teacher_hidden": [rng.normal(size=(3, n_hidden, 32)).astype(np.float16) for _ in windows],
        "teacher_logits": [rng.normal(size=(3, 3)).astype(np.float32) for _ in windows],
    }
    return features.make_batches(windows, 2, 32, 0, targets)


@pytest.mark.parametrize("stage_index", [0, 1, 2, 5, 6])
def test_only_the_stage_variables_change(tiny_student, tiny_tokenizer, stage_index):
    schedule = stages.build_schedule(config.DistilConfig(epochs=1, gradual_unfreezing=True), 2,
                                     False)
    stage = schedule[stage_index]
    groups = tiny_student.variable_groups()
    before = {g: [v.numpy().copy() for v in vs] for g, vs in groups.items()}
    batches = _batches(tiny_tokenizer)
    train.run_stage(tiny_student, stage, lambda epoch: batches, lambda: 1.0,
                    objectives.LossSettings(student_layers=(2,)), QUIET)
    for group, values in before.items():
        changed = any(not np.array_equal(a, v.numpy()) for a, v in zip(values, groups[group]))
        assert changed == (group in stage.trainable), (stage.name, group)


def test_bottom_blocks_can_be_frozen_in_every_stage():
    cfg = config.DistilConfig(stages=("representations", "logits", "labels"),
                              freeze_bottom_blocks=1, gradual_unfreezing=True)
    schedule = stages.build_schedule(cfg, num_blocks=3, freeze_embeddings=False)
    assert [s.name for s in schedule] == ["representations", "logits/top0", "logits/top1",
                                          "logits/top2", "labels/top0", "labels/top1",
                                          "labels/top2"]
    assert set(schedule[0].trainable) == {"block:1", "block:2", "projection"}
    assert schedule[3].trainable == ("head", "block:2", "block:1")
    (tsl,) = stages.build_schedule(dataclasses.replace(cfg, freeze_bottom_blocks=2), 3, False,
                                   "tsl")
    assert set(tsl.trainable) == {"head", "block:2", "projection"}
    with pytest.raises(ValueError, match="leaves none of the student's 3 blocks"):
        stages.build_schedule(dataclasses.replace(cfg, freeze_bottom_blocks=3), 3, False)
    with pytest.raises(ValueError, match=">= 0"):
        config.DistilConfig(freeze_bottom_blocks=-1)


@pytest.mark.parametrize("stage_index", [0, 1])
def test_frozen_bottom_blocks_do_not_change(tiny_student, tiny_tokenizer, stage_index):
    cfg = config.DistilConfig(stages=("representations", "logits"), epochs=1,
                              freeze_bottom_blocks=1)
    stage = stages.build_schedule(cfg, 2, False)[stage_index]
    groups = tiny_student.variable_groups()
    before = {g: [v.numpy().copy() for v in vs] for g, vs in groups.items()}
    train.run_stage(tiny_student, stage, lambda epoch: _batches(tiny_tokenizer), lambda: 1.0,
                    objectives.LossSettings(student_layers=(2,)), QUIET)
    changed = {g for g, values in before.items()
               if any(not np.array_equal(a, v.numpy()) for a, v in zip(values, groups[g]))}
    assert "block:1" in changed and not changed & {"block:0", "embeddings"}


def test_best_dev_weights_are_restored(tiny_student, tiny_tokenizer):
    stage = stages.Stage("labels", "labels", "train", ("head",), 1e-2, 3, 5, "dev_f1")
    scores = iter([0.5, 0.9, 0.1])
    snapshots = []

    def monitor():
        snapshots.append([v.numpy().copy() for v in tiny_student.classifier.weights])
        return next(scores)

    batches = _batches(tiny_tokenizer)
    result = train.run_stage(tiny_student, stage, lambda e: batches, monitor, loop=QUIET)
    assert result.best_epoch == 2 and result.best == 0.9
    for kept, best in zip(tiny_student.classifier.weights, snapshots[1]):
        np.testing.assert_array_equal(kept.numpy(), best)


def test_best_weights_never_hold_two_copies_of_the_model():
    """A new best replaces the old copy in memory: the old one is dropped before the new one is
    read (with a 64M-parameter student, keeping both raised the stage's peak RSS by 256 MB)."""
    from xtremedistil_tf import stage_checkpoints

    class Weight:
        def __init__(self, x):
            self.x = x

        def numpy(self):
            held.append(best.values)  # what the previous best still holds while this is read
            return np.full(2, self.x)

        def assign(self, value):
            self.x = float(value[0])

    held = []
    model = type("Model", (), {"weights": [Weight(1.0), Weight(2.0)]})()
    best = stage_checkpoints.BestWeights(model, None, progress=None)
    best.save(1)
    model.weights[0].x = 5.0
    best.save(2)
    assert held == [None] * 4
    model.weights[0].x = 7.0
    best.restore()
    assert model.weights[0].x == 5.0


def test_stage_that_does_not_beat_the_baseline_keeps_entering_weights(tiny_student, tiny_tokenizer):
    stage = stages.Stage("labels", "labels", "train", ("head",), 1e-2, 2, 1, "dev_f1")
    entering = [v.numpy().copy() for v in tiny_student.weights]
    batches = _batches(tiny_tokenizer)
    result = train.run_stage(tiny_student, stage, lambda e: batches, lambda: 0.3,
                             loop=QUIET, baseline=0.5)
    assert result.best == 0.5 and result.best_epoch == 0
    for kept, before in zip(tiny_student.weights, entering):
        np.testing.assert_array_equal(kept.numpy(), before)


def test_nan_loss_stops_with_a_clear_message(tiny_student, tiny_tokenizer):
    stage = stages.Stage("logits", "logits", "transfer", ("head",), 1e-2, 1, 1, "dev_f1")
    batches = _batches(tiny_tokenizer)
    for b in batches:
        b["teacher_logits"][:] = np.nan
    with pytest.raises(FloatingPointError, match="loss became nan"):
        train.run_stage(tiny_student, stage, lambda e: batches, lambda: 0.0, loop=QUIET)


def test_teacher_stage_trains_per_layer_classifiers_when_present():
    cfg = config.TeacherConfig(model="x")
    assert "aux" in stages.teacher_stage(cfg, 2, aux=True).trainable
    assert "aux" not in stages.teacher_stage(cfg, 2).trainable
    frozen = config.TeacherConfig(model="x", freeze_encoder=True)
    assert stages.teacher_stage(frozen, 2).trainable == ("head",)


class _Crash(Exception):
    pass


def _fresh_student(tiny_tokenizer):
    import tensorflow as tf

    tf.keras.utils.set_random_seed(7)
    teacher, _, _ = models.build_teacher(os.path.join(MODELS, "tiny_bert"), ["O", "B-X", "I-X"],
                                         0.0)
    student = students.build_student("l2-h16", teacher, 3, len(tiny_tokenizer),
                                   tiny_tokenizer.pad_token_id, 32, 0.0, False)
    # Dropout masks come from TF's random state, which a new process does not continue: with
    # dropout on, a resumed run sees the same data in the same order but other masks.
    for layer in student.submodules:
        if isinstance(layer, tf.keras.layers.Dropout):
            layer.rate = 0.0
    return student


RESUME_STAGE = stages.Stage("labels", "labels", "train", ("head", "block:1"), 1e-2, 3, 3,
                            "dev_f1")


def _resume_batches(tiny_tokenizer):
    base = _batches(tiny_tokenizer) * 3  # 6 batches per epoch

    def batches(epoch):
        rng = np.random.default_rng(epoch)
        return [base[i] for i in rng.permutation(len(base))]

    return batches


def _monitor_for(model):
    # A deterministic function of the weights: the dev score of a real run.
    return lambda: -float(np.abs(model.classifier.kernel.numpy()).sum())


@pytest.fixture(scope="module")
def uninterrupted(tiny_tokenizer):
    """The resume tests' stage run without interruption -> (result, final weights)."""
    reference = _fresh_student(tiny_tokenizer)
    expected = train.run_stage(reference, RESUME_STAGE, _resume_batches(tiny_tokenizer),
                               _monitor_for(reference), loop=QUIET)
    return expected, [w.numpy() for w in reference.weights]


@pytest.mark.parametrize("crash_at", [(0, 3), (1, 0), (2, 1)])
def test_interrupted_stage_resumes_to_the_same_result(tiny_tokenizer, tmp_path, crash_at,
                                                      uninterrupted):
    """A stage killed mid-epoch (or between epochs) and run again ends with the same weights,
    history and best epoch as an uninterrupted run (dropout off, deterministic data order)."""
    stage, batches, monitor_for = RESUME_STAGE, _resume_batches(tiny_tokenizer), _monitor_for
    expected, reference = uninterrupted

    model = _fresh_student(tiny_tokenizer)
    ckpt = str(tmp_path / "ckpt")
    every_step = dataclasses.replace(QUIET, checkpoint_every=1)

    calls = {"n": 0}

    def crashing(epoch):
        full = batches(epoch)
        calls["n"] += 1
        if epoch != crash_at[0] or calls["n"] <= 2:  # the first two calls size the stage
            return full
        return full[: crash_at[1]] + [None]  # a batch that crashes the loop after crash_at[1]

    import tensorflow as tf

    with pytest.raises((TypeError, tf.errors.InvalidArgumentError)):  # the None batch
        train.run_stage(model, stage, crashing, monitor_for(model), loop=every_step,
                        checkpoint_dir=ckpt)

    reader = tf.train.load_checkpoint(ckpt)  # the crash left a checkpoint at the crash point
    done = [reader.get_tensor(f"progress/{k}/.ATTRIBUTES/VARIABLE_VALUE")
            for k in ("epoch", "step")]
    assert done == list(crash_at)
    again = _fresh_student(tiny_tokenizer)  # a new process: fresh weights, then the checkpoint
    result = train.run_stage(again, stage, batches, monitor_for(again), loop=every_step,
                             checkpoint_dir=ckpt)
    assert result.best_epoch == expected.best_epoch
    assert [r["epoch"] for r in result.history] == [r["epoch"] for r in expected.history]
    for r, e in zip(result.history, expected.history):
        assert r["train_loss"] == pytest.approx(e["train_loss"], rel=1e-5)
    for a, b in zip(again.weights, reference, strict=True):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-5, atol=1e-6)


def test_teacher_with_frozen_embeddings_trains_every_block_but_not_the_embeddings():
    cfg = config.TeacherConfig(model="m", freeze_embeddings=True)
    trainable = stages.teacher_stage(cfg, 3).trainable
    assert set(trainable) == {"head", "block:0", "block:1", "block:2"}
    assert "embeddings" in stages.teacher_stage(
        config.TeacherConfig(model="m", freeze_embeddings=False), 3).trainable


def test_nonfinite_batches_are_skipped_without_touching_the_weights(tiny_student, tiny_tokenizer,
                                                                    capsys):
    stage = stages.Stage("logits", "logits", "transfer", ("head",), 1e-2, 1, 1, "dev_f1")
    batches = _batches(tiny_tokenizer)[:1]
    batches[0]["teacher_logits"][:] = np.nan
    before = [v.numpy().copy() for v in tiny_student.head.trainable_variables]
    result = train.run_stage(tiny_student, stage, lambda e: batches, lambda: 0.0,
                             loop=dataclasses.replace(QUIET, skip_nonfinite=3))
    assert len(result.history) == 1  # the stage finished
    for b, v in zip(before, tiny_student.head.trainable_variables, strict=True):
        np.testing.assert_array_equal(b, v.numpy())  # no update from the NaN batch
    assert "batch skipped, learning rate halved (1/3 skips)" in capsys.readouterr().err
    twice = [batches[0], batches[0]]
    with pytest.raises(FloatingPointError, match="1 batches were skipped already"):
        train.run_stage(tiny_student, stage, lambda e: twice, lambda: 0.0,
                        loop=dataclasses.replace(QUIET, skip_nonfinite=1))


def test_auto_stages_skip_the_representations_of_a_student_cut_from_the_teacher():
    auto = config.DistilConfig()
    assert auto.stages == ("auto",)
    cut = stages.build_schedule(auto, 3, True, student="teacher:0,2,4")
    assert [s.name for s in cut] == ["logits", "labels"]
    fresh = stages.build_schedule(auto, 3, True, student="l4-h256")
    assert [s.name for s in fresh] == ["representations", "logits", "labels"]
    chosen = config.DistilConfig(stages=("representations", "labels"))
    assert stages.resolve_stages(chosen.stages, "teacher:0") == ("representations", "labels")
    with pytest.raises(ValueError, match="use auto or"):
        config.DistilConfig(stages=("auto", "labels"))
