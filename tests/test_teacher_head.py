"""A ready token-classification teacher on data it does not fit: --teacher_new_head (its
encoder, a new head for the data's labels), and --teacher_fine_tune=yes (its own head and labels,
fine-tuned further on data whose types it covers)."""

import json
import os

import numpy as np
import pytest

from xtremedistil_tf import model_folders, models, pipeline, tagging, teacher_labels
from conftest import MODELS, SMOKE, fixture_path, run_distil

NER = os.path.join(MODELS, "tiny_bert_ner")  # ready, IO labels LOC ORG PER O
WITH_MISC = ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-PER", "I-PER"]


def run_smoke(*args):
    return run_distil(SMOKE, *args)


@pytest.fixture(scope="module")
def misc_train(tmp_path_factory):
    """tiny_train.conll plus a sentence with a MISC entity, a type tiny_bert_ner lacks."""
    path = tmp_path_factory.mktemp("misc") / "train.conll"
    with open(fixture_path("tiny_train.conll"), encoding="utf-8") as f:
        text = f.read().rstrip("\n")
    path.write_text(text + "\n\nThe\tO\nOlympics\tB-MISC\nbegan\tO\n.\tO\n", encoding="utf-8")
    return str(path)


def test_unmappable_data_label_names_the_flag():
    with pytest.raises(ValueError, match="--teacher_new_head") as e:
        teacher_labels.map_teacher_labels(["LOC", "ORG", "PER", "O"], WITH_MISC)
    assert "MISC" in str(e.value) and "\n" not in str(e.value)


def test_new_head_keeps_the_encoder_and_drops_the_labels():
    ready, ready_labels, is_ready = models.build_teacher(NER, WITH_MISC, 0.1)
    assert is_ready and ready_labels == ["LOC", "ORG", "PER", "O"]
    fresh, fresh_labels, is_ready = models.build_teacher(NER, WITH_MISC, 0.1, head="crf",
                                                         new_head=True)
    assert not is_ready and fresh_labels == WITH_MISC
    assert fresh.classifier.kernel.shape == (32, len(WITH_MISC)) and fresh.head.crf is not None
    for a, b in zip(fresh.encoder.weights, ready.encoder.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_ready_teacher_learns_gold_tags_in_its_own_label_space():
    data = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert tagging.teacher_label_ids(["LOC", "ORG", "PER", "O"], data) == {
        "O": 3, "B-LOC": 0, "I-LOC": 0, "B-PER": 2, "I-PER": 2}
    assert tagging.teacher_label_ids(data, data) == {label: i for i, label in enumerate(data)}
    iob = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    assert tagging.teacher_label_ids(iob, data) == {
        "O": 0, "B-LOC": 3, "I-LOC": 4, "B-PER": 1, "I-PER": 2}


def test_data_with_a_type_the_teacher_lacks_is_refused_before_any_work(misc_train, tmp_path):
    from xtremedistil_tf import config

    cfg = config.RunConfig(
        data=config.DataConfig(train_files=(misc_train,),
                               dev_files=(fixture_path("tiny_dev.conll"),),
                               test_files=(fixture_path("tiny_test.conll"),), max_seq_length=32),
        teacher=config.TeacherConfig(model=NER), student=config.StudentConfig(model="l1-h16"),
        distil=config.DistilConfig(), output_dir=str(tmp_path / "run"), speed_seq_length=16)
    with pytest.raises(ValueError, match="B-MISC .*--teacher_new_head"):
        pipeline.run(cfg)
    assert not (tmp_path / "run" / "teacher").exists()


def test_new_head_on_data_with_a_type_the_teacher_lacks(misc_train, tmp_path):
    proc = run_smoke(f"--output_dir={tmp_path}/run", f"--export_dir={tmp_path}/exports",
                      f"--teacher={NER}", f"--train_file={misc_train}", "--teacher_new_head",
                      "--teacher_epochs=1", "--stages=labels", "--nogradual_unfreezing")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[teacher] epoch 1/1" in proc.stderr  # the new head is fine-tuned
    teacher_labels = (tmp_path / "run" / "teacher" / "labels.txt").read_text().split()
    assert teacher_labels == ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG",
                              "B-PER", "I-PER"]
    labels = (tmp_path / "exports" / "run" / "1" / "assets" / "labels.txt").read_text().split()
    assert labels == teacher_labels


def test_ready_teacher_fine_tuned_further(tmp_path):
    proc = run_smoke(f"--output_dir={tmp_path}/run", "--export_formats=none",
                      f"--teacher={NER}", "--teacher_fine_tune=yes", "--teacher_epochs=1",
                      "--stages=labels", "--nogradual_unfreezing")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "fine-tuning the ready token classifier further" in proc.stderr
    assert "[teacher] epoch 1/1" in proc.stderr
    labels = (tmp_path / "run" / "teacher" / "labels.txt").read_text()
    assert labels.split() == ["LOC", "ORG", "PER", "O"]  # its own labels, kept
    doc = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(doc["teacher"]["per_type"]) <= {"PER", "LOC", "ORG"}
    # The weights moved away from the checkpoint's.
    teacher, _, _ = models.build_teacher(NER, ["O", "B-PER", "I-PER"], 0.1)
    before = teacher.classifier.kernel.numpy().copy()
    model_folders.load_weights(teacher, str(tmp_path / "run" / "teacher"))
    assert not np.allclose(before, teacher.classifier.kernel.numpy())
