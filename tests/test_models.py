"""Loading teachers (both checkpoint formats, ready token classifiers) and making students."""

import os

import numpy as np
import pytest
import tensorflow as tf

from xtremedistil_tf import embeddings, model_folders, models, students
from conftest import MODELS

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
IDS = {"input_ids": tf.constant([[2, 10, 60, 70, 3]]), "attention_mask": tf.ones((1, 5), tf.int32)}


def hidden(model):
    return model(IDS, output_hidden_states=True)["hidden_states"][-1].numpy()


@pytest.fixture(scope="module")
def teacher():
    model, labels, ready = models.build_teacher(os.path.join(MODELS, "tiny_bert"), LABELS, 0.1)
    assert labels == LABELS and not ready
    return model


def test_h5_and_pytorch_safetensors_load_the_same_weights(teacher):
    pt, _, _ = models.build_teacher(os.path.join(MODELS, "tiny_bert_pt"), LABELS, 0.1)
    assert os.listdir(os.path.join(MODELS, "tiny_bert_pt")).count("tf_model.h5") == 0
    np.testing.assert_allclose(hidden(pt), hidden(teacher), atol=1e-5)


def test_ready_token_classifier_keeps_its_labels_and_head():
    model, labels, ready = models.build_teacher(os.path.join(MODELS, "tiny_bert_ner"), LABELS, 0.1)
    assert ready and labels == ["LOC", "ORG", "PER", "O"]
    assert model(IDS)["logits"].shape == (1, 5, 4)


def test_outputs_and_variable_groups(teacher):
    out = teacher(IDS, output_hidden_states=True)
    assert out["logits"].shape == (1, 5, len(LABELS))
    assert len(out["hidden_states"]) == 3
    groups = teacher.variable_groups()
    assert set(groups) == {"embeddings", "block:0", "block:1", "head", "projection", "aux"}
    assert groups["aux"] == []  # no per-layer classifiers unless asked
    grouped = {id(v) for vs in groups.values() for v in vs}
    # Every trainable variable is in a group (the pooler was not even built).
    assert all(id(v) in grouped for v in teacher.trainable_variables)


def test_save_and_reload_gives_identical_outputs(teacher, tmp_path):
    folder = str(tmp_path / "teacher")
    size = model_folders.save_weights(teacher, folder)
    assert size > 0
    again, _, _ = models.build_teacher(os.path.join(MODELS, "tiny_bert"), LABELS, 0.1)
    model_folders.load_weights(again, folder)
    np.testing.assert_allclose(again(IDS)["logits"].numpy(), teacher(IDS)["logits"].numpy(),
                               atol=1e-6)


def test_ready_teacher_and_crf_models_are_rebuilt_from_their_folders(tmp_path):
    """`load_model` needs only the folder: a ready token classifier (its own head and labels,
    no pooler) and a CRF teacher with per-layer classifiers come back with identical outputs."""
    ready, ready_labels, _ = models.build_teacher(os.path.join(MODELS, "tiny_bert_ner"),
                                                  LABELS, 0.0)
    crf, _, _ = models.build_teacher(os.path.join(MODELS, "tiny_bert"), LABELS, 0.0,
                                     head="attention_crf", special_ids=(2, 3), aux_from_layer=1)
    for model, labels in ((ready, ready_labels), (crf, LABELS)):
        folder = str(tmp_path / model.name / "teacher")
        model_folders.save_weights(model, folder, labels)
        again, read = model_folders.load_model(folder)
        assert read == labels and again.get_config() == model.get_config()
        out, expected = again(IDS), model(IDS)
        np.testing.assert_allclose(out["logits"], expected["logits"], atol=1e-6)
        for a, b in zip(out.get("aux_logits", []), expected.get("aux_logits", []), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)
        np.testing.assert_array_equal(again.decode(out["logits"], **IDS),
                                      model.decode(expected["logits"], **IDS))


def test_a_folder_without_its_encoder_config_is_a_one_line_error(teacher, tmp_path):
    folder = str(tmp_path / "student")
    model_folders.save_weights(teacher, folder, LABELS)
    os.remove(os.path.join(folder, model_folders.ENCODER_FILE))
    with pytest.raises(ValueError, match="encoder.json") as e:
        model_folders.load_model(folder)
    assert "\n" not in str(e.value)


def test_student_cut_from_teacher_copies_layers(teacher):
    student = students.build_student("teacher:1", teacher, len(LABELS), 185, 0, 32, 0.1, False)
    assert student.num_blocks == 1
    for a, b in zip(student.encoder.encoder.layer[0].weights,
                    teacher.encoder.encoder.layer[1].weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(student.encoder.embeddings.weight.numpy(),
                                  teacher.encoder.embeddings.weight.numpy())


def test_preset_student_gets_compressed_teacher_embeddings(teacher):
    student = students.build_student("l1-h16", teacher, len(LABELS), 185, 0, 32, 0.1, False)
    assert student.hidden_size == 16 and student.num_blocks == 1
    expected = embeddings.compress(teacher.encoder.embeddings.weight.numpy(), 16)
    np.testing.assert_allclose(student.encoder.embeddings.weight.numpy(), expected, atol=1e-6)
    assert student.project(tf.zeros((1, 2, 16))).shape == (1, 2, 32)


def test_pretrained_student_with_other_vocabulary_reads_teacher_tokens(teacher, tmp_path):
    import transformers

    cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                  num_attention_heads=1, intermediate_size=32)
    hf = transformers.TFBertModel(cfg)
    hf(tf.constant([[1, 2]]))
    hf.save_pretrained(str(tmp_path / "student"), safe_serialization=False)
    student = students.build_student(str(tmp_path / "student"), teacher, len(LABELS), 185, 0, 32,
                                   0.1, False)
    assert student.encoder.embeddings.weight.shape == (185, 16)
    # Its own transformer block weights were kept.
    np.testing.assert_array_equal(student.encoder.encoder.layer[0].weights[0].numpy(),
                                  hf.bert.encoder.layer[0].weights[0].numpy())


def test_short_names_and_bad_specs(teacher):
    assert students.resolve_student_name("xtremedistil-l6-h256") == \
        "microsoft/xtremedistil-l6-h256-uncased"
    with pytest.raises(ValueError, match="layers 0..1"):
        students.build_student("teacher:0,5", teacher, 5, 185, 0, 32, 0.1, False)
    with pytest.raises(ValueError, match="not a folder, hub id"):
        students.build_student("tiny", teacher, 5, 185, 0, 32, 0.1, False)


def test_missing_model_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(ValueError, match="cannot load model") as e:
        models.build_teacher(str(tmp_path / "nope"), LABELS, 0.1)
    assert "\n" not in str(e.value)


def test_param_count_excludes_projection(teacher):
    student = students.build_student("l1-h16", teacher, len(LABELS), 185, 0, 32, 0.1, False)
    total = sum(int(np.prod(v.shape)) for v in student.trainable_variables)
    projection = sum(int(np.prod(v.shape)) for v in student.projection.weights)
    assert models.count_params(student) == total - projection


def test_student_embeddings_cover_a_teacher_table_longer_than_the_tokenizer(teacher):
    # multilingual-e5-small: 250037 embedding rows, 250002 tokenizer entries.
    rows = teacher.encoder.embeddings.weight.shape[0]
    student = students.build_student("l1-h16", teacher, len(LABELS), rows - 7, 0, 32, 0.1, False)
    table = student.encoder.embeddings.weight
    assert table.shape == (rows, 16)
    expected = embeddings.compress(teacher.encoder.embeddings.weight.numpy(), 16)
    np.testing.assert_allclose(table.numpy(), expected, atol=1e-5)


def test_student_with_random_embeddings_keeps_its_initialisation(teacher):
    rows = teacher.encoder.embeddings.weight.shape[0]
    student = students.build_student("l1-h16", teacher, len(LABELS), rows, 0, 32, 0.1, False,
                                   embeddings="random")
    table = student.encoder.embeddings.weight.numpy()
    compressed = embeddings.compress(teacher.encoder.embeddings.weight.numpy(), 16)
    assert not np.allclose(table, compressed, atol=1e-3)
    assert abs(table.std() - 0.02) < 0.005  # BERT's truncated-normal initialiser
