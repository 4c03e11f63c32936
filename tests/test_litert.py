"""LiteRT export: same labels as the SavedModel at any batch and length, every head, int8,
assets, versions, one-line errors, and the predict CLI on a LiteRT folder."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from xtremedistil_tf import crf, export, export_folders, litert, models, predict
from conftest import MODELS, REPO

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
# (batch, tokens): one token, odd lengths, the position limit (128), batches of 1 to 9.
SHAPES = [(1, 1), (1, 7), (3, 17), (9, 40), (2, 128)]


def inputs(batch, length, seed=0):
    """Random ids between [CLS] (2) and [SEP] (3), later rows padded shorter."""
    rng = np.random.default_rng(seed + 100 * batch + length)
    ids = rng.integers(5, 185, (batch, length)).astype(np.int32)
    mask = np.ones_like(ids)
    for row in range(batch):
        n = max(1, length - 3 * row)
        ids[row, 0] = 2
        ids[row, n - 1] = 3 if n > 1 else ids[row, n - 1]
        ids[row, n:], mask[row, n:] = 0, 0
    return ids, mask


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny_tokenizer):
    """A softmax and a CRF tagger, each as SavedModel and LiteRT (softmax also int8)."""
    base = str(tmp_path_factory.mktemp("litert"))
    out = {}
    for head, formats in (("softmax", ("savedmodel", "litert", "litert_int8")),
                          ("crf", ("savedmodel", "litert"))):
        model, _, _ = models.build_teacher(os.path.join(MODELS, "tiny_bert"), LABELS, 0.1, head,
                                           tiny_tokenizer.all_special_ids)
        if head == "crf":  # non-zero transitions, so that Viterbi differs from argmax
            tf.random.set_seed(1)
            model.head.crf.transitions.assign(tf.random.normal([7, 7]))
        paths = export.export_formats(model, LABELS, tiny_tokenizer, base, head, formats)
        out[head] = (model, paths)
    return base, out


def saved_model_outputs(path, ids, mask):
    fn = tf.saved_model.load(path).signatures["serving_default"]
    return {k: v.numpy() for k, v in fn(input_ids=tf.constant(ids),
                                         attention_mask=tf.constant(mask)).items()}


@pytest.mark.parametrize("head", ["softmax", "crf"])
def test_float32_litert_equals_the_saved_model(exports, head):
    _, out = exports
    _, paths = out[head]
    lite = litert.Model(paths["litert"])
    fn = tf.saved_model.load(paths["savedmodel"]).signatures["serving_default"]
    for batch, length in SHAPES * 2:  # twice: shapes change back and forth between calls
        ids, mask = inputs(batch, length)
        got = lite(ids, mask)
        expected = fn(input_ids=tf.constant(ids), attention_mask=tf.constant(mask))
        assert got["label_ids"].dtype == np.int32 and got["probabilities"].dtype == np.float32
        np.testing.assert_array_equal(got["label_ids"], expected["label_ids"].numpy())
        np.testing.assert_allclose(got["probabilities"], expected["probabilities"].numpy(),
                                   atol=1e-4)


def test_int8_mostly_agrees_and_is_smaller(exports):
    _, out = exports
    _, paths = out["softmax"]
    lite, int8 = litert.Model(paths["litert"]), litert.Model(paths["litert_int8"])
    assert int8.size_bytes < 0.6 * lite.size_bytes
    equal = total = 0
    for batch, length in SHAPES:
        ids, mask = inputs(batch, length)
        a, b = lite(ids, mask), int8(ids, mask)
        real = mask.astype(bool)
        equal += int((a["label_ids"] == b["label_ids"])[real].sum())
        total += int(real.sum())
        np.testing.assert_allclose(b["probabilities"].sum(-1), 1.0, atol=1e-4)
    assert equal / total >= 0.9


def test_folders_assets_and_info(exports):
    base, out = exports
    _, paths = out["softmax"]
    assert paths["litert"] == os.path.join(base, "softmax-litert", "1")
    assert paths["litert_int8"] == os.path.join(base, "softmax-litert-int8", "1")
    for fmt in ("litert", "litert_int8"):
        folder = paths[fmt]
        assert sorted(os.listdir(folder)) == ["assets", "litert.json", "model.tflite"]
        assert sorted(os.listdir(os.path.join(folder, "assets"))) == sorted(
            os.listdir(os.path.join(paths["savedmodel"], "assets")))
        with open(os.path.join(folder, "litert.json")) as f:
            info = json.load(f)
        assert info["vocab_size"] == 185 and info["max_positions"] == 128
        assert not [d for d in os.listdir(os.path.dirname(folder)) if d.startswith(".")]
    # TF Serving's config lists SavedModels only.
    with open(os.path.join(base, export_folders.MODELS_CONFIG)) as f:
        assert "litert" not in f.read()
    lite = litert.Model(paths["litert"])
    sig = lite.interpreter.get_signature_list()["serving_default"]
    assert sorted(sig["inputs"]) == ["attention_mask", "input_ids"]
    assert sorted(sig["outputs"]) == ["label_ids", "probabilities"]


def test_versions_are_never_overwritten(exports, tiny_tokenizer):
    base, out = exports
    model, paths = out["softmax"]
    before = os.path.getmtime(os.path.join(paths["litert"], "model.tflite"))
    with pytest.raises(FileExistsError, match="never overwritten"):
        litert.export(model, LABELS, tiny_tokenizer, base, "softmax", version=1)
    assert os.path.getmtime(os.path.join(paths["litert"], "model.tflite")) == before


def test_bad_inputs_are_clear_value_errors(exports):
    _, out = exports
    lite = litert.Model(out["softmax"][1]["litert"])
    ok = np.array([[2, 10, 3]], np.int32)
    with pytest.raises(ValueError, match="same shape"):
        lite(ok, np.ones((1, 2), np.int32))
    with pytest.raises(ValueError, match="vocabulary size"):
        lite(np.array([[2, 999, 3]]), np.ones((1, 3)))
    with pytest.raises(ValueError, match="at most 128 tokens"):
        lite(np.ones((1, 129)), np.ones((1, 129)))
    with pytest.raises(ValueError, match="no model.tflite"):
        litert.Model(os.path.dirname(out["softmax"][1]["litert"]))


def test_conversion_errors_are_one_line():
    text = ("loc(callsite(fused[...])): error: 'tf.Foo' op is neither a custom op nor a flex op\n"
            "error: failed while converting: 'main'\n")
    assert litert._first_error(text) == "'tf.Foo' op is neither a custom op nor a flex op"


def test_export_command_reports_a_conversion_error_in_one_line(monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise litert.ConversionError("tagger: cannot convert to LiteRT (none): 'tf.Foo' op is "
                                     "neither a custom op nor a flex op")

    monkeypatch.setattr(export, "rebuild", lambda *a: (None, None, None, None))
    monkeypatch.setattr(export, "export_formats", refuse)
    assert export.main(["--run_dir", "x", "--format", "litert", "--name", "tagger",
                        "--export_dir", "y"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: tagger: cannot convert to LiteRT")
    assert export.main(["--run_dir", "x", "--quantize", "dynamic_int8"]) == 2
    assert "--format=litert only" in capsys.readouterr().err


def test_tensor_list_free_recursions_equal_tf_scan():
    rng = np.random.default_rng(0)
    emissions = tf.constant(rng.standard_normal((3, 6, 4)), tf.float32)
    mask = tf.constant([[1, 1, 0, 1, 1, 0], [0, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]])
    transitions = tf.constant(rng.standard_normal((4, 4)), tf.float32)
    start, end = (tf.constant(rng.standard_normal(4), tf.float32) for _ in range(2))
    spec = tf.TensorSpec([None, None, 4], tf.float32), tf.TensorSpec([None, None], tf.int32)

    def run():
        @tf.function(input_signature=spec)
        def both(e, m):
            return (*crf.crf_decode(e, m, transitions, start, end),
                    crf.crf_marginals(e, m, transitions, start, end),
                    crf.crf_log_likelihood(e, tf.zeros_like(m), m, transitions, start, end))

        return both.get_concrete_function()

    plain = run()
    with crf.without_tensor_lists():
        loops = run()
    def list_ops(fn):
        return [n.op for f in fn.graph.as_graph_def().library.function for n in f.node_def
                if n.op.startswith("TensorList")]

    assert list_ops(plain) and not list_ops(loops)
    for a, b in zip(plain(emissions, mask), loops(emissions, mask)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
    # No step at all (the tf.scan version cannot stack zero steps of a dynamic batch).
    tags, score, marginals, ll = loops(emissions[:, :0], mask[:, :0])
    assert tags.shape == (3, 0) and marginals.shape == (3, 0, 4)
    assert not np.any(score.numpy()) and not np.any(ll.numpy())


def test_predict_on_litert_equals_predict_on_the_saved_model(exports, tmp_path):
    _, out = exports
    _, paths = out["crf"]
    src = tmp_path / "in.txt"
    long = " ".join(["John visited London"] * 12)
    src.write_text(f"John Smith visited Paris .\n{long}\nAcme\n  Köln ist schön \n",
                   encoding="utf-8")
    results = {}
    for fmt in ("savedmodel", "litert"):
        for kind in ("conll", "jsonl"):
            path = tmp_path / f"{fmt}.{kind}"
            with open(path, "w", encoding="utf-8") as f:
                predict.run(paths[fmt], str(src), f, kind, batch_size=2, max_seq_length=16,
                            progress=False)
            results[fmt, kind] = path.read_text(encoding="utf-8")
    assert results["litert", "conll"] == results["savedmodel", "conll"]
    # The same entities; their scores (rounded to 4 decimals) agree up to the two runtimes'
    # float32 rounding, which can move the 4th decimal.
    lite, saved = ([json.loads(line) for line in results[fmt, "jsonl"].splitlines()]
                   for fmt in ("litert", "savedmodel"))
    assert len(lite) == len(saved)
    for a, b in zip(lite, saved):
        assert a["text"] == b["text"] and len(a["entities"]) == len(b["entities"])
        for x, y in zip(a["entities"], b["entities"]):
            assert {k: v for k, v in x.items() if k != "score"} == \
                {k: v for k, v in y.items() if k != "score"}
            assert x["score"] == pytest.approx(y["score"], abs=2e-4)
    cli = tmp_path / "cli.conll"
    proc = subprocess.run(
        [sys.executable, "-m", "xtremedistil_tf.predict", f"--model={paths['litert']}",
         f"--input={src}", f"--output={cli}", "--max_seq_length=16", "--batch_size=2"],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert cli.read_text(encoding="utf-8") == results["savedmodel", "conll"]
    assert "tagged 4 sentences, 45 words" in proc.stderr


def test_run_config_validates_export_formats():
    from xtremedistil_tf import config as config_lib

    def run_config(formats):
        return config_lib.RunConfig(
            data=config_lib.DataConfig(("t.conll",), ("d.conll",), ("e.conll",)),
            teacher=config_lib.TeacherConfig(os.path.join(MODELS, "tiny_bert")),
            student=config_lib.StudentConfig("l1-h16"), distil=config_lib.DistilConfig(),
            output_dir="run", export_formats=formats)

    assert run_config(("savedmodel", "litert_int8")).export_formats == ("savedmodel",
                                                                        "litert_int8")
    assert config_lib.EXPORT_FORMATS == export.EXPORT_FORMATS
    assert run_config(()).export_formats == ()  # --export_formats=none: no export
    for bad in (("onnx",), ("savedmodel", "none")):
        with pytest.raises(ValueError, match="--export_formats"):
            run_config(bad)
