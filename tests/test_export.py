"""Export -> reload in a clean process -> same predictions; versions; the predict CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from xtremedistil_tf import models, savedmodel
from conftest import MODELS, REPO

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]

# Runs in a fresh interpreter that never imports xtremedistil_tf (nor transformers).
CLEAN_LOAD = r"""
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, tensorflow as tf
path, ids, mask = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
fn = tf.saved_model.load(path).signatures["serving_default"]
out = fn(input_ids=tf.constant(ids, tf.int32), attention_mask=tf.constant(mask, tf.int32))
assert "xtremedistil_tf" not in sys.modules and "transformers" not in sys.modules
print(json.dumps({"label_ids": out["label_ids"].numpy().tolist(),
                  "probabilities": out["probabilities"].numpy().tolist(),
                  "dtypes": [out["label_ids"].dtype.name, out["probabilities"].dtype.name]}))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_tokenizer):
    model, _, _ = models.build_teacher(os.path.join(MODELS, "tiny_bert"), LABELS, 0.1)
    base = str(tmp_path_factory.mktemp("export"))
    path = savedmodel.export(model, LABELS, tiny_tokenizer, base, "tagger")
    return model, base, path


def test_layout_and_assets(exported):
    _, base, path = exported
    assert path == os.path.join(base, "tagger", "1")
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))
    assets = os.listdir(os.path.join(path, "assets"))
    assert {"labels.txt", "tokenizer.json", "vocab.txt"} <= set(assets)
    with open(os.path.join(path, "assets", "labels.txt")) as f:
        assert f.read().split("\n")[:-1] == LABELS
    assert [d for d in os.listdir(os.path.join(base, "tagger")) if d.startswith(".")] == []


def test_clean_process_reload_gives_same_predictions(exported):
    model, _, path = exported
    ids = [[2, 10, 60, 70, 3, 0], [2, 11, 3, 0, 0, 0]]
    mask = [[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_USE_LEGACY_KERAS"] = "1"  # only so that TF itself loads the same way; not needed
    proc = subprocess.run([sys.executable, "-c", CLEAN_LOAD, path, json.dumps(ids),
                           json.dumps(mask)], capture_output=True, text=True, env=env, cwd="/",
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    logits = model({"input_ids": tf.constant(ids), "attention_mask": tf.constant(mask)})["logits"]
    expected = tf.nn.softmax(logits).numpy()
    np.testing.assert_allclose(np.array(got["probabilities"]), expected, atol=1e-5)
    assert got["label_ids"] == expected.argmax(-1).tolist()
    assert got["dtypes"] == ["int32", "float32"]


def test_new_versions_never_overwrite(exported, tiny_tokenizer):
    model, base, _ = exported
    second = savedmodel.export(model, LABELS, tiny_tokenizer, base, "tagger")
    assert second.endswith(os.path.join("tagger", "2"))
    with pytest.raises(FileExistsError):
        savedmodel.export(model, LABELS, tiny_tokenizer, base, "tagger", version=1)


def test_predict_cli_tags_every_word(exported, tmp_path):
    _, _, path = exported
    text = tmp_path / "in.txt"
    long = " ".join(["John visited London"] * 30)
    text.write_text(f"John Smith visited Paris .\n{long}\nAcme\n", encoding="utf-8")
    out = tmp_path / "out.conll"
    proc = subprocess.run(
        [sys.executable, "-m", "xtremedistil_tf.predict", f"--model={path}", f"--input={text}",
         f"--output={out}", "--max_seq_length=16"],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    blocks = out.read_text(encoding="utf-8").strip("\n").split("\n\n")
    assert len(blocks) == 3
    words = [[line.split("\t")[0] for line in b.split("\n")] for b in blocks]
    assert words[0] == ["John", "Smith", "visited", "Paris", "."]
    assert len(words[1]) == 90 and words[2] == ["Acme"]
    tags = {line.split("\t")[1] for b in blocks for line in b.split("\n")}
    assert tags <= set(LABELS)
    assert "tagged 3 sentences, 96 words" in proc.stderr


def test_predict_cli_bad_model_is_one_line(tmp_path):
    text = tmp_path / "in.txt"
    text.write_text("a b\n")
    proc = subprocess.run(
        [sys.executable, "-m", "xtremedistil_tf.predict", f"--model={tmp_path}",
         f"--input={text}"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 2
    # One line: TensorFlow's start-up lines (cuInit, cudart, ...) stay out (startup.py).
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
