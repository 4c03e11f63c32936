"""--format hf: a Hugging Face token-classification folder that transformers' own pipeline
loads (TF, and PyTorch when torch is installed) and that tags like our predict CLI."""

import importlib.util
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from xtremedistil_tf import export_hf, models, predict, savedmodel
from conftest import MODELS, fixture_path, varied_tagger
from hub_layouts import fixture_sentences

LABELS = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


def single_piece_text(tok, per_line=3, limit=8):
    """Lines of the fixture words that are one sub-word each: HF's "simple" aggregation tags
    sub-words, our CLI words (by their first sub-word), so on these the two must agree."""
    words = []
    for sentence in fixture_sentences(os.path.dirname(fixture_path("x"))):
        words += [w for w in sentence.split() if w not in words
                  and len(tok(w, add_special_tokens=False)["input_ids"]) == 1]
    lines = [" ".join(words[i:i + per_line]) for i in range(0, len(words), per_line)]
    return lines[:limit]


@pytest.fixture(scope="module", params=["bert", "xlm-roberta"])
def exported(request, hub_models, tmp_path_factory):
    folder = (os.path.join(MODELS, "tiny_bert") if request.param == "bert"
              else hub_models["xlmr_ner"])
    model, tok = varied_tagger(folder, LABELS)
    base = str(tmp_path_factory.mktemp("hf"))
    saved = savedmodel.export(model, LABELS, tok, base, "tagger")
    hf_dir = export_hf.export_hf(model, LABELS, tok, base, "tagger-hf")
    text = tmp_path_factory.mktemp("text") / "in.txt"
    lines = single_piece_text(tok)
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return request.param, model, saved, hf_dir, str(text), lines


def ours(model_dir, text):
    """Entities of predict --format jsonl, per line."""
    import io

    out = io.StringIO()
    predict.run(model_dir, text, out, "jsonl", max_seq_length=64, progress=False)
    return [json.loads(line)["entities"] for line in out.getvalue().splitlines()]


def hf_entities(pipe, lines):
    """The pipeline's entities; its SentencePiece offsets include the space before a word
    ("▁." covers " ."), which ours do not."""
    def start(line, i):
        return i + len(line[i:]) - len(line[i:].lstrip())

    return [[{"type": e["entity_group"], "start": start(line, int(e["start"])),
              "end": int(e["end"]), "score": float(e["score"])} for e in pipe(line)]
            for line in lines]


def same(got, expected):
    assert [[(e["type"], e["start"], e["end"]) for e in s] for s in got] == \
        [[(e["type"], e["start"], e["end"]) for e in s] for s in expected]
    for a, b in zip(got, expected):
        np.testing.assert_allclose([e["score"] for e in a], [e["score"] for e in b], atol=2e-4)


def test_layout_and_config(exported):
    kind, model, _, hf_dir, _, _ = exported
    assert hf_dir.endswith(os.path.join("tagger-hf", "1"))
    files = set(os.listdir(hf_dir))
    assert {"config.json", "tf_model.h5", "model.safetensors", "labels.txt",
            "tokenizer.json", "tokenizer_config.json"} <= files
    with open(os.path.join(hf_dir, "config.json")) as f:
        config = json.load(f)
    arch = {"bert": "BertForTokenClassification",
            "xlm-roberta": "XLMRobertaForTokenClassification"}[kind]
    assert config["architectures"] == [arch] and config["model_type"] == kind
    assert config["id2label"] == {str(i): label for i, label in enumerate(LABELS)}
    assert config["label2id"] == {label: i for i, label in enumerate(LABELS)}


def test_safetensors_have_pytorch_names_and_layouts(exported):
    from safetensors.numpy import load_file

    kind, model, _, hf_dir, _, _ = exported
    state = load_file(os.path.join(hf_dir, "model.safetensors"))
    prefix = "bert" if kind == "bert" else "roberta"
    np.testing.assert_array_equal(state["classifier.weight"], model.classifier.kernel.numpy().T)
    np.testing.assert_array_equal(state[f"{prefix}.embeddings.word_embeddings.weight"],
                                  model.encoder.embeddings.weight.numpy())
    assert f"{prefix}.encoder.layer.1.attention.self.query.weight" in state
    assert not any("pooler" in k for k in state)


def test_safetensors_alone_load_with_transformers_pytorch_name_mapping(exported, tmp_path):
    """transformers maps PyTorch names to TF ones when a folder has only model.safetensors:
    every weight must be found there, none left over, and the logits must be ours."""
    import shutil

    import transformers

    kind, model, _, hf_dir, _, _ = exported
    folder = tmp_path / "pt_only"
    shutil.copytree(hf_dir, folder)
    os.remove(folder / "tf_model.h5")
    hf, info = transformers.TFAutoModelForTokenClassification.from_pretrained(
        str(folder), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ids = tf.constant([[0, 5, 9, 7, 2]])
    mask = tf.ones_like(ids)
    np.testing.assert_allclose(hf(input_ids=ids, attention_mask=mask).logits.numpy(),
                               model({"input_ids": ids, "attention_mask": mask})["logits"],
                               atol=1e-5)


def test_transformers_tf_pipeline_finds_our_entities(exported):
    import transformers

    kind, model, saved, hf_dir, text, lines = exported
    assert len(lines) >= 2
    # torch_dtype=None: transformers 4.54.1's pipeline() reads torch for its default "auto"
    # and fails with NameError where torch is not installed.
    pipe = transformers.pipeline("token-classification", model=hf_dir, framework="tf",
                                 aggregation_strategy="simple", torch_dtype=None)
    expected = ours(saved, text)
    assert sum(len(s) for s in expected) >= 3  # something to compare
    same(hf_entities(pipe, lines), expected)
    # Our JSON lines carry the pipeline's keys too, with the same meaning.
    theirs = pipe(lines[0])[0]
    assert set(theirs) <= set(expected[0][0]) | {"index"}
    assert expected[0][0]["entity_group"] == expected[0][0]["type"]


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="torch not installed (optional, requirements-peers.txt)")
def test_transformers_pytorch_pipeline_finds_our_entities(exported):
    import transformers

    kind, model, saved, hf_dir, text, lines = exported
    pipe = transformers.pipeline("token-classification", model=hf_dir, framework="pt",
                                 aggregation_strategy="simple")
    same(hf_entities(pipe, lines), ours(saved, text))


def test_predict_reads_the_hf_folder_like_the_savedmodel(exported):
    kind, model, saved, hf_dir, text, lines = exported
    conll = fixture_path("tiny_test.conll")  # every word, however many sub-words
    same(ours(hf_dir, conll), ours(saved, conll))


def test_crf_heads_are_refused_in_one_line():
    model, _, _ = models.build_teacher(os.path.join(MODELS, "tiny_bert"), LABELS, 0.1,
                                       head="crf")
    with pytest.raises(ValueError, match="crf head has no Hugging Face class") as e:
        export_hf.export_hf(model, LABELS, None, "/nonexistent", "x")
    assert "\n" not in str(e.value)
    assert tf.io.gfile.exists("/nonexistent") is False
