"""Weight selection (`--student_init=select`): importances, the selected student against a
numpy BERT written here from the teacher's weights, and the one-line refusals."""

import math

import numpy as np
import pytest
import tensorflow as tf
import transformers

from xtremedistil_tf import model_folders, models, student_init, students

H, HEADS, INTER, LAYERS, VOCAB = 32, 4, 128, 3, 60


def _teacher(kind="bert", seed=0):
    tf.keras.utils.set_random_seed(seed)
    common = dict(vocab_size=VOCAB, hidden_size=H, num_hidden_layers=LAYERS,
                  num_attention_heads=HEADS, intermediate_size=INTER,
                  max_position_embeddings=40, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0)
    cfg = (transformers.BertConfig(**common) if kind == "bert" else
           transformers.XLMRobertaConfig(pad_token_id=1, **common))
    encoder = models.encoder_from_config(cfg)
    model = models.TokenClassifier(encoder, 5, 0.0, name="teacher").build_with_dummy()
    # Random LayerNorm and bias values, so that a wrong index shows.
    rng = np.random.default_rng(seed)
    for v in model.weights:
        if "LayerNorm" in v.name or "bias" in v.name:
            v.assign(rng.normal(1.0 if "gamma" in v.name else 0.0, 0.3, v.shape))
    return model


def _batches(n=3, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ids = rng.integers(5, VOCAB, (4, 12)).astype(np.int32)
        mask = np.ones_like(ids)
        mask[1, 7:] = 0
        mask[3, 4:] = 0
        ids[mask == 0] = 0
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def _gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _ln(x, g, b, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def _reference(teacher, sel, head_size, ids, mask):
    """The selected student, computed in numpy head by head from the teacher's weights."""
    enc = teacher.encoder
    w = {v.name.split("/", 2)[-1]: v.numpy() for v in enc.weights}

    def get(suffix):
        hits = [k for k in w if k.endswith(suffix)]
        assert len(hits) == 1, (suffix, hits)
        return w[hits[0]]

    d = sel.dims
    word = get("word_embeddings/weight:0")[:, d]
    pos = get("position_embeddings/embeddings:0")[:, d]
    typ = get("token_type_embeddings/embeddings:0")[:, d]
    x = word[ids] + pos[np.arange(ids.shape[1])][None] + typ[0]
    x = _ln(x, get("embeddings/LayerNorm/gamma:0")[d], get("embeddings/LayerNorm/beta:0")[d])
    for j, layer in enumerate(sel.layers):
        p = f"layer_._{layer}/"

        def lw(s, p=p):
            return get(p + s)

        attn = np.zeros_like(x)
        for head in sel.heads[j]:
            c = slice(head * head_size, (head + 1) * head_size)
            q = x @ lw("attention/self/query/kernel:0")[d][:, c] + lw(
                "attention/self/query/bias:0")[c]
            k = x @ lw("attention/self/key/kernel:0")[d][:, c] + lw(
                "attention/self/key/bias:0")[c]
            v = x @ lw("attention/self/value/kernel:0")[d][:, c] + lw(
                "attention/self/value/bias:0")[c]
            s = q @ k.transpose(0, 2, 1) / math.sqrt(head_size)
            s = np.where(mask[:, None, :] > 0, s, -1e9)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            attn += (s @ v) @ lw("attention/output/dense/kernel:0")[c][:, d]
        attn += lw("attention/output/dense/bias:0")[d]
        a = _ln(attn + x, lw("attention/output/LayerNorm/gamma:0")[d],
                lw("attention/output/LayerNorm/beta:0")[d])
        n = sel.neurons[j]
        mid = _gelu(a @ lw("intermediate/dense/kernel:0")[d][:, n]
                    + lw("intermediate/dense/bias:0")[n])
        out = mid @ lw("output/dense/kernel:0")[n][:, d] + lw("output/dense/bias:0")[d]
        x = _ln(out + a, lw("output/LayerNorm/gamma:0")[d], lw("output/LayerNorm/beta:0")[d])
    return x


def test_selected_student_equals_a_numpy_bert_of_the_selected_weights():
    teacher = _teacher()
    batches = _batches()
    student = students.build_student("l2-h16", teacher, 5, VOCAB, 0, 40, 0.0, False,
                                   init="select", select_batches=batches)
    sel = student.selection
    assert sel.layers == [0, 2] and len(sel.dims) == 16
    assert [len(h) for h in sel.heads] == [2, 2] and [len(n) for n in sel.neurons] == [64, 64]
    assert student.encoder.config.num_attention_heads == 2  # head size 8 kept
    # The selection is not the trivial prefix (the test would miss index mix-ups).
    assert list(sel.dims) != list(range(16))
    b = batches[0]
    got = student.encoder(input_ids=b["input_ids"], attention_mask=b["attention_mask"]
                          ).last_hidden_state.numpy()
    want = _reference(teacher, sel, 8, b["input_ids"], b["attention_mask"])
    real = b["attention_mask"] > 0
    np.testing.assert_allclose(got[real], want[real], atol=2e-4)
    # The classifier reads the selected dimensions; the projection maps back to them.
    np.testing.assert_array_equal(student.head.classifier.kernel.numpy(),
                                  teacher.head.classifier.kernel.numpy()[sel.dims])
    h = np.random.default_rng(1).normal(size=(2, 16)).astype(np.float32)
    projected = student.project(tf.constant(h)).numpy()
    np.testing.assert_allclose(projected[:, sel.dims], h)
    assert not np.delete(projected, sel.dims, axis=1).any()


def test_importance_finds_silent_heads_neurons_and_outlier_dimensions():
    teacher = _teacher()
    block = teacher.encoder.encoder.layer[1]
    w_o = block.attention.dense_output.dense.kernel
    silenced = w_o.numpy()
    silenced[8:16] = 0.0  # head 1 of block 1 writes nothing
    w_o.assign(silenced)
    w_2 = block.bert_output.dense.kernel
    dead = w_2.numpy()
    dead[:40] = 0.0  # FFN neurons 0..39 of block 1 write nothing
    w_2.assign(dead)
    beta = teacher.encoder.embeddings.LayerNorm.beta
    loud = beta.numpy()
    gamma = teacher.encoder.embeddings.LayerNorm.gamma
    g = gamma.numpy()
    g[5] = 40.0  # an outlier dimension, as BERT-like models have
    gamma.assign(g)
    beta.assign(loud)
    imp = student_init.measure(teacher.encoder, _batches())
    assert imp.heads.shape == (LAYERS, HEADS) and imp.neurons.shape == (LAYERS, INTER)
    assert imp.heads[1, 1] == 0 and (imp.heads[1, [0, 2, 3]] > 0).all()
    assert not imp.neurons[1, :40].any() and (imp.neurons[1, 40:] > 0).all()
    assert imp.dims.argmax() == 5
    sel = student_init.choose(imp, LAYERS, 3, 16, 2, 64)  # layers 0, 1, 2
    assert 5 in sel.dims
    assert 1 not in sel.heads[1] and not set(range(40)) & set(sel.neurons[1])


def test_works_for_xlm_roberta_teachers():
    teacher = _teacher("xlmr")
    batches = _batches()
    for b in batches:
        b["input_ids"][b["attention_mask"] == 0] = 1  # XLM-R's pad id
    student = students.build_student("l1-h8", teacher, 5, VOCAB, 1, 30, 0.0, False,
                                   init="select", select_batches=batches)
    assert student.encoder.config.model_type == "xlm-roberta"
    assert student.selection.layers == [LAYERS - 1]
    logits = student({"input_ids": batches[0]["input_ids"],
                      "attention_mask": batches[0]["attention_mask"]})["logits"]
    assert logits.shape == (4, 12, 5) and np.isfinite(logits.numpy()).all()


@pytest.mark.parametrize("spec, message", [
    ("l4-h16", "at least 4 teacher blocks, the teacher has 3"),
    ("l2-h64", "at most the teacher's 32 and a multiple of its head size 8"),
    ("l2-h20", "multiple of its head size 8"),
])
def test_impossible_students_are_refused_in_one_line(spec, message):
    teacher = _teacher()
    with pytest.raises(ValueError, match=message) as e:
        students.check_student(spec, teacher, 32, "select")
    assert "\n" not in str(e.value)


def test_select_layers_are_evenly_spaced_with_first_and_last():
    assert student_init.select_layers(12, 6) == [0, 2, 4, 7, 9, 11]
    assert student_init.select_layers(12, 4) == [0, 4, 7, 11]
    assert student_init.select_layers(12, 12) == list(range(12))
    assert student_init.select_layers(12, 1) == [11]


def test_a_saved_student_is_rebuilt_from_its_folder_alone(tmp_path):
    """export rebuilds a run's student from student/ (no teacher, no selection text)."""
    teacher = _teacher("xlmr")
    trained = students.build_student("l2-h16", teacher, 5, VOCAB, 1, 40, 0.0, False,
                                   init="select", select_batches=_batches())
    labels = ["O", "B-A", "I-A", "B-B", "I-B"]
    model_folders.save_weights(trained, str(tmp_path / "student"), labels)
    del teacher
    rebuilt, read = model_folders.load_model(str(tmp_path / "student"))
    assert read == labels and rebuilt.name == "student"
    for a, b in zip(trained.weights, rebuilt.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    batch = _batches(1)[0]
    np.testing.assert_allclose(rebuilt(batch)["logits"], trained(batch)["logits"], atol=1e-6)
    assert rebuilt.projection is not None and rebuilt.encoder.pooler is None


def test_a_select_cut_of_every_layer_is_the_teacher_and_a_random_one_has_a_new_head():
    teacher = _teacher()
    b = _batches()[0]
    inputs = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
    want = teacher(inputs)["logits"].numpy()
    every = "teacher:" + ",".join(str(i) for i in range(LAYERS))
    copy = students.build_student(every, teacher, 5, VOCAB, 0, 40, 0.0, False, init="select")
    np.testing.assert_allclose(copy(inputs)["logits"].numpy(), want, atol=1e-5)
    h = np.random.default_rng(1).normal(size=(2, H)).astype(np.float32)
    np.testing.assert_allclose(copy.project(tf.constant(h)).numpy(), h)  # identity
    fresh = students.build_student(every, teacher, 5, VOCAB, 0, 40, 0.0, False)
    assert np.abs(fresh(inputs)["logits"].numpy() - want).max() > 1e-2
    # A teacher whose labels are another set (or order) keeps the student's head new.
    teacher.head.labels = ["O", "B-A", "I-A", "B-B", "I-B"]
    other = students.build_student(every, teacher, 5, VOCAB, 0, 40, 0.0, False, init="select",
                                   labels=["O", "B-B", "I-B", "B-A", "I-A"])
    assert not np.allclose(other.head.classifier.kernel.numpy(),
                           teacher.head.classifier.kernel.numpy())


def test_select_is_refused_for_a_checkpoint_student_and_taken_for_cuts():
    from xtremedistil_tf import config

    config.StudentConfig(model="teacher:0,2", init="select")
    config.StudentConfig(model="l4-h256", init="select")
    with pytest.raises(ValueError, match="preset .* or teacher:i,j student") as e:
        config.StudentConfig(model="xtremedistil-l6-h256", init="select")
    assert "\n" not in str(e.value)
