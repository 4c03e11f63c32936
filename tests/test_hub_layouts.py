"""The headline command on the hub's real file layouts (tiny twins, see hub_layouts.py):
teacher jplu/tf-xlm-r-ner-40-lang (SentencePiece model, no tokenizer.json), student
microsoft/xtremedistil-l6-h256-uncased (vocab.txt, config.json, tf_model.h5 only)."""

import json
import os

import numpy as np

from xtremedistil_tf import models, students
from conftest import SMOKE, fixture_path, run_distil

LABELS = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


def test_the_twins_have_the_hub_file_layouts(hub_models):
    assert sorted(os.listdir(hub_models["xlmr_ner"])) == [
        "config.json", "sentencepiece.bpe.model", "special_tokens_map.json", "tf_model.h5",
        "tokenizer_config.json"]
    with open(os.path.join(hub_models["xlmr_ner"], "tokenizer_config.json")) as f:
        assert json.load(f) == {}
    assert sorted(os.listdir(hub_models["xtremedistil"])) == [
        "config.json", "tf_model.h5", "vocab.txt"]


def test_sentencepiece_only_teacher_gets_a_fast_tokenizer(hub_models):
    tok = models.load_tokenizer(hub_models["xlmr_ner"])
    assert tok.is_fast and type(tok).__name__ == "XLMRobertaTokenizerFast"
    assert (tok.cls_token_id, tok.pad_token_id, tok.sep_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    words = ["John", "Smith", "visited", "Köln", "."]
    enc = tok(words, is_split_into_words=True)
    assert enc.input_ids[0] == 0 and enc.input_ids[-1] == 2
    assert sorted(set(w for w in enc.word_ids() if w is not None)) == list(range(len(words)))
    teacher, labels, ready = models.build_teacher(hub_models["xlmr_ner"], LABELS, 0.1,
                                                  special_ids=tok.all_special_ids)
    assert ready and labels == ["LOC", "ORG", "PER", "O"]
    assert teacher.encoder.embeddings.weight.shape[0] == len(tok)


def test_uncased_student_reads_the_teachers_tokens(hub_models):
    tok = models.load_tokenizer(hub_models["xtremedistil"])
    assert tok.is_fast and tok.tokenize("John") == ["john"]
    teacher, _, _ = models.build_teacher(hub_models["xlmr_ner"], LABELS, 0.1)
    rows = teacher.encoder.embeddings.weight.shape[0]
    student = students.build_student(hub_models["xtremedistil"], teacher, len(LABELS), rows, 1,
                                   32, 0.1, False)
    assert student.encoder.embeddings.weight.shape == (rows, 16)
    assert student.num_blocks == 2
    # Its transformer blocks are the checkpoint's, not a fresh initialisation.
    import transformers

    hf = transformers.TFAutoModel.from_pretrained(hub_models["xtremedistil"])
    np.testing.assert_array_equal(student.encoder.encoder.layer[1].weights[0].numpy(),
                                  hf.bert.encoder.layer[1].weights[0].numpy())


def test_headline_command(hub_models, tmp_path):
    """run_distil.py --teacher <xlm-r ner> --student <xtremedistil> with the smoke settings
    (one stage: the logits stage reads the ready teacher's mapped distributions)."""
    proc = run_distil(SMOKE, f"--teacher={hub_models['xlmr_ner']}",
                      f"--student={hub_models['xtremedistil']}", f"--output_dir={tmp_path}/run",
                      f"--export_dir={tmp_path}/exports", "--stages=logits",
                      "--nogradual_unfreezing", "--trim_vocab")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[teacher]" not in proc.stderr  # a ready token classifier is used as is
    doc = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(doc["teacher"]["per_type"]) <= {"PER", "LOC", "ORG"}
    assert doc["student"]["params"] < doc["teacher"]["params"]
    # --trim_vocab: the export keeps the sub-words of the training and transfer text only.
    trimmed = doc["student"]["trimmed_vocab"]
    assert trimmed["vocab"][1] < trimmed["vocab"][0] == doc["student"]["embedding_params"] // 16
    assert trimmed["params"][1] < trimmed["params"][0] == doc["student"]["params"]
    assert "parameters are word embeddings; exported with" in proc.stdout
    export = tmp_path / "exports" / "run" / "1"
    assert (export / "saved_model.pb").is_file()
    assets = os.listdir(export / "assets")
    assert "tokenizer.json" in assets and "labels.txt" in assets
    with open(export / "assets" / "tokenizer.json", encoding="utf-8") as f:
        assert len(json.load(f)["model"]["vocab"]) < trimmed["vocab"][0]

    # The Hugging Face export of the same run (vocabulary trimmed the same way) tags the test
    # file as the SavedModel does, and transformers' own pipeline loads it.
    import transformers

    from xtremedistil_tf import data, export as export_lib, predict

    assert export_lib.main([f"--run_dir={tmp_path}/run", "--format=hf", "--trim_vocab"]) == 0
    hf_dir = tmp_path / "exports" / "run-hf" / "1"
    with open(hf_dir / "config.json") as f:
        assert json.load(f)["architectures"] == ["BertForTokenClassification"]
    test = data.read_labelled_files([fixture_path("tiny_test.conll")])
    tags = [predict.ExportedTagger(str(p)).tag(test, 8, 32) for p in (export, hf_dir)]
    assert tags[0] == tags[1]
    pipe = transformers.pipeline("token-classification", model=str(hf_dir), framework="tf",
                                 torch_dtype=None)
    assert all(e["entity"] in LABELS for e in pipe("John Smith visited Paris ."))

    # --trim_text: the sub-words of more text are kept too (here the test file's, which has
    # pieces the training and transfer text lack), and the run's own stay.
    assert export_lib.main([f"--run_dir={tmp_path}/run", "--trim_vocab", "--name=more",
                            f"--trim_text={fixture_path('tiny_test.conll')}"]) == 0
    vocab = {}
    for name in ("run", "more"):
        with open(tmp_path / "exports" / name / "1" / "assets" / "tokenizer.json") as f:
            model = json.load(f)["model"]  # Unigram: [piece, score] pairs
            vocab[name] = {v[0] if isinstance(v, list) else v for v in model["vocab"]}
    # The student reads the teacher's (SentencePiece) tokenizer.
    original = transformers.AutoTokenizer.from_pretrained(hub_models["xlmr_ner"])
    pieces = {p for s in test for p in original.tokenize(list(s.words),
                                                          is_split_into_words=True)}
    assert not pieces <= vocab["run"] and pieces <= vocab["more"]
    assert vocab["run"] < vocab["more"]
