"""Serving: tag_text tokenization against Hugging Face, tag_text against the predict CLI's
tagger, models.config, input checks at serving_default, export from a run folder, the REST
client's request/response handling (against the SavedModel run in-process), and predict's
streaming reader and JSON-lines output."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from xtremedistil_tf import (config as config_lib, export, export_folders, model_folders,
                             models, predict, savedmodel, serving_text, students)
from conftest import MODELS, REPO, fixture_path

sys.path.insert(0, os.path.join(REPO, "scripts"))
import client  # noqa: E402  (scripts/client.py)

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
MAX_LEN = 24
# Multilingual, with punctuation inside words, accents (composed and combining), CJK, a
# zero-width space, a control character, a non-breaking space and words not in the vocabulary.
SENTENCES = [
    "John Smith visited Paris .",
    "Ein Zug fährt von Köln nach Hamburg .",
    "don't @user #tag http://x.com/a?b=c",
    "  Ünïcode\u00a0ñandú  Ωmega 中文字 e\u0301",
    "tab\there\u200bzero \x07 Zürich",
    "Angela Merkel besuchte München",
    "",
]


def hf_word_pieces(tok, words):
    """Per-word sub-word ids the way features.make_windows reads them."""
    if not words:
        return []
    enc = tok(words, is_split_into_words=True, add_special_tokens=False)
    per = [[] for _ in words]
    for pos, w in enumerate(enc.word_ids()):
        per[w].append(enc["input_ids"][pos])
    return [p or [tok.unk_token_id] for p in per]


@pytest.fixture(scope="module")
def cased_tokenizer(tmp_path_factory):
    import transformers

    with open(os.path.join(MODELS, "tiny_bert", "vocab.txt"), encoding="utf-8") as f:
        vocab = f.read().split("\n")
    extra = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÜÉÑΩ中文字"]
    vocab += [t for c in extra for t in (c, "##" + c)] + ["Paris", "John", "##ürich"]
    path = tmp_path_factory.mktemp("cased") / "vocab.txt"
    path.write_text("\n".join(t for t in vocab if t) + "\n", encoding="utf-8")
    return transformers.BertTokenizerFast(vocab_file=str(path), do_lower_case=False,
                                          strip_accents=None)


@pytest.mark.parametrize("kind", ["uncased", "cased"])
def test_in_graph_wordpiece_ids_equal_hugging_face(kind, tiny_tokenizer, cased_tokenizer):
    tok = tiny_tokenizer if kind == "uncased" else cased_tokenizer
    graph_tok = serving_text.make_tokenizer(serving_text.wordpiece_settings(tok))
    words = serving_text.split_words(tf.constant(SENTENCES))
    for i, sentence in enumerate(SENTENCES):
        expected_words = sentence.split()
        assert [w.decode() for w in words[i].numpy()] == expected_words
        if expected_words:
            got = serving_text.word_pieces(graph_tok, tf.constant(expected_words),
                                           tok.unk_token_id).to_list()
            assert got == hf_word_pieces(tok, expected_words), sentence


def test_split_words_follows_python_whitespace():
    spaces = "".join(chr(c) for c in range(0x3001) if chr(c).isspace())
    text = f"a{spaces}b\u3000c\u2028d\x1ce"
    got = serving_text.split_words(tf.constant([text])).to_list()[0]
    assert [w.decode() for w in got] == text.split()


@pytest.fixture(scope="module")
def sentencepiece_tokenizer():
    """An XLM-R-like SentencePiece Unigram tokenizer (<s> <pad> </s> <unk> first, <mask> last)
    trained on the test sentences, at most 180 pieces (fits tiny_bert's 185 embeddings)."""
    import tokenizers
    import transformers

    sp = tokenizers.Tokenizer(tokenizers.models.Unigram())
    sp.normalizer = tokenizers.normalizers.Replace(tokenizers.Regex(" {2,}"), " ")
    sp.pre_tokenizer = tokenizers.pre_tokenizers.Metaspace()
    trainer = tokenizers.trainers.UnigramTrainer(
        vocab_size=179, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], unk_token="<unk>")
    with open(fixture_path("tiny_train.conll"), encoding="utf-8") as f:
        text = SENTENCES + f.read().split("\n")
    sp.train_from_iterator(text, trainer)
    sp.add_special_tokens(["<mask>"])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=sp, bos_token="<s>", pad_token="<pad>", eos_token="</s>",
        unk_token="<unk>", cls_token="<s>", sep_token="</s>", mask_token="<mask>")


def test_in_graph_sentencepiece_ids_equal_hugging_face(sentencepiece_tokenizer):
    tok = sentencepiece_tokenizer
    settings = serving_text.tokenizer_settings(tok)
    assert settings["kind"] == "sentencepiece"
    graph_tok = serving_text.make_tokenizer(settings)
    # Special tokens typed in text ("<mask>") are the one known difference: HF matches them.
    words = [w for s in SENTENCES for w in s.split()] + ["Zürichsee", "qqq", "\u200b", "x\x07y"]
    got = serving_text.word_pieces(graph_tok, tf.constant(words), tok.unk_token_id).to_list()
    assert got == hf_word_pieces(tok, words)
    assert len(tok) <= 185


def test_other_tokenizers_are_refused():
    import tokenizers
    import transformers

    bpe = tokenizers.Tokenizer(tokenizers.models.BPE({"<unk>": 0, "a": 1}, [], unk_token="<unk>"))
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>")
    with pytest.raises(serving_text.UnsupportedTokenizer, match="WordPiece and SentencePiece"):
        serving_text.tokenizer_settings(tok)


def test_sentencepiece_export_tags_text_as_serving_default_does(sentencepiece_tokenizer,
                                                                tmp_path):
    tok = sentencepiece_tokenizer
    model, _, _ = models.build_teacher(os.path.join(MODELS, "tiny_bert"), LABELS, 0.1,
                                       special_ids=tok.all_special_ids)
    model.classifier.kernel.assign(model.classifier.kernel * 300.0)  # varied tags
    path = savedmodel.export(model, LABELS, tok, str(tmp_path), "sp", text_signature=True,
                             max_seq_length=MAX_LEN)
    out = tf.saved_model.load(path).signatures["tag_text"](sentences=tf.constant(SENTENCES))
    got = {"words": [[w.decode() for w in r] for r in out["words"].numpy()],
           "tags": [[t.decode() for t in r] for r in out["tags"].numpy()],
           "scores": out["scores"].numpy().tolist()}
    assert_tag_text_equals_predict(path, SENTENCES, got)
    assert len({t for row in got["tags"] for t in row if t}) > 2


@pytest.fixture(scope="module")
def text_export(tmp_path_factory, tiny_tokenizer):
    model, _, _ = models.build_teacher(os.path.join(MODELS, "tiny_bert"), LABELS, 0.1,
                                       special_ids=tiny_tokenizer.all_special_ids)
    base = str(tmp_path_factory.mktemp("text_export"))
    path = savedmodel.export(model, LABELS, tiny_tokenizer, base, "tagger", text_signature=True,
                         max_seq_length=MAX_LEN)
    return model, base, path


# Only tensorflow and tensorflow_text: the process a TF Serving-like consumer has.
CLEAN_TAG_TEXT = r"""
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf, tensorflow_text  # noqa: F401  (registers the tokenizer ops)
fn = tf.saved_model.load(sys.argv[1]).signatures["tag_text"]
out = fn(sentences=tf.constant(json.loads(sys.argv[2])))
assert "xtremedistil_tf" not in sys.modules and "transformers" not in sys.modules
print(json.dumps({"words": [[w.decode() for w in r] for r in out["words"].numpy()],
                  "tags": [[t.decode() for t in r] for r in out["tags"].numpy()],
                  "scores": out["scores"].numpy().tolist()}))
"""


def test_tag_text_in_a_clean_process_equals_the_predict_tagger(text_export):
    _, _, path = text_export
    long = " ".join(["John visited London"] * 10)  # more sub-words than one window
    sentences = SENTENCES + [long]
    proc = subprocess.run([sys.executable, "-c", CLEAN_TAG_TEXT, path, json.dumps(sentences)],
                          capture_output=True, text=True, cwd="/", timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    cut = assert_tag_text_equals_predict(path, sentences, got)
    assert cut[-1] and sum(cut) < len(cut) - 3  # truncation and full sentences both seen


def assert_tag_text_equals_predict(path, sentences, got):
    """`got` (tag_text's words, tags and scores as lists) equals the predict CLI's tagger: the
    Hugging Face tokenizer from the export's assets, then serving_default. Returns, per sentence,
    whether its sub-words overflowed one window (those words are tagged "")."""
    tagger = predict.ExportedTagger(path)
    sents = [predict.data_lib.Sentence(s.split(), None) for s in sentences]
    tags, scores = tagger.tag_with_scores(sents, 8, MAX_LEN)
    width = max(len(s.split()) for s in sentences)
    cut = []
    for i, s in enumerate(sentences):
        n = len(s.split())
        # Words whose sub-words fit in one window are tagged as predict tags them; the rest "".
        budget, used, k = MAX_LEN - 2, 0, 0
        for piece in hf_word_pieces(tagger.tokenizer, s.split()):
            if used + len(piece) > budget:
                break
            used, k = used + len(piece), k + 1
        cut.append(k < n)
        assert got["words"][i] == s.split() + [""] * (width - n)
        assert got["tags"][i] == tags[i][:k] + [""] * (width - k), s
        np.testing.assert_allclose(got["scores"][i][:k], scores[i][:k], atol=1e-5)
        assert all(t in LABELS for t in tags[i])
    return cut


def test_plain_export_has_only_serving_default(tmp_path, tiny_tokenizer):
    model, _, _ = models.build_teacher(os.path.join(MODELS, "tiny_bert"), LABELS, 0.1)
    path = savedmodel.export(model, LABELS, tiny_tokenizer, str(tmp_path), "plain")
    assert list(tf.saved_model.load(path).signatures) == ["serving_default"]


def test_models_config_lists_every_model(text_export, tiny_tokenizer):
    model, base, _ = text_export
    savedmodel.export(model, LABELS, tiny_tokenizer, base, "other")
    os.makedirs(os.path.join(base, "not-a-model"))
    with open(os.path.join(base, export_folders.MODELS_CONFIG)) as f:
        text = f.read()
    assert text == (
        'model_config_list {\n'
        '  config {\n    name: "other"\n    base_path: "/models/other"\n'
        '    model_platform: "tensorflow"\n  }\n'
        '  config {\n    name: "tagger"\n    base_path: "/models/tagger"\n'
        '    model_platform: "tensorflow"\n  }\n}\n')
    assert [f for f in os.listdir(base) if f.startswith(".")] == []


def test_serving_default_rejects_bad_inputs_clearly(text_export):
    _, _, path = text_export
    fn = tf.saved_model.load(path).signatures["serving_default"]
    ok = tf.constant([[2, 10, 3]], tf.int32)
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError), match="int32"):
        fn(input_ids=tf.constant([[2, 10, 3]], tf.int64), attention_mask=ok)
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError), match="shape"):
        fn(input_ids=tf.constant([2, 10, 3], tf.int32), attention_mask=ok)
    with pytest.raises(tf.errors.InvalidArgumentError, match="same shape"):
        fn(input_ids=ok, attention_mask=tf.constant([[1, 1]], tf.int32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="vocabulary size"):
        fn(input_ids=tf.constant([[2, 999, 3]], tf.int32), attention_mask=ok)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at most 128 tokens"):
        long = tf.ones([1, 129], tf.int32)
        fn(input_ids=long, attention_mask=long)


def test_export_command_rebuilds_a_run(tmp_path):
    """A run folder as run_distil.py leaves it (relative paths from its working directory)."""
    from xtremedistil_tf import run_data

    (tmp_path / "data").mkdir()
    for name in ("tiny_train.conll", "tiny_dev.conll", "tiny_test.conll"):
        shutil.copy(fixture_path(name), tmp_path / "data" / name)
    cfg = config_lib.RunConfig(
        data=config_lib.DataConfig(("data/tiny_train.conll",), ("data/tiny_dev.conll",),
                                   ("data/tiny_test.conll",), max_seq_length=32),
        teacher=config_lib.TeacherConfig(os.path.join(MODELS, "tiny_bert")),
        student=config_lib.StudentConfig("l1-h16"),
        distil=config_lib.DistilConfig(), output_dir="run", export_dir="exports",
        speed_seq_length=16)
    run = tmp_path / "run"
    run.mkdir()
    (run / "state.json").write_text(json.dumps(
        {"settings": json.loads(json.dumps(dataclasses.asdict(cfg))), "done": {}}))
    absolute = dataclasses.replace(cfg, data=dataclasses.replace(
        cfg.data, train_files=(str(tmp_path / "data/tiny_train.conll"),),
        dev_files=(str(tmp_path / "data/tiny_dev.conll"),),
        test_files=(str(tmp_path / "data/tiny_test.conll"),)))
    labels = run_data.load_data(absolute.data).labels
    tok = models.load_tokenizer(cfg.teacher.model)
    teacher, _, _ = models.build_teacher(cfg.teacher.model, labels, 0.1, "softmax",
                                         tok.all_special_ids)
    student = students.build_student("l1-h16", teacher, len(labels), len(tok), tok.pad_token_id,
                                   32, 0.1, False, "softmax", labels, tok.all_special_ids)
    model_folders.save_weights(teacher, str(run / "teacher"), labels, tok)
    model_folders.save_weights(student, str(run / "student"), labels, tok)
    shutil.rmtree(tmp_path / "data")  # export reads the run folder only, never the data

    assert export.main(["--run_dir", str(run)]) == 0
    path = tmp_path / "exports" / "run" / "1"
    fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    ids = tf.constant([[2, 10, 60, 70, 3]], tf.int32)
    mask = tf.ones_like(ids)
    expected = tf.nn.softmax(student({"input_ids": ids, "attention_mask": mask})["logits"])
    np.testing.assert_allclose(fn(input_ids=ids, attention_mask=mask)["probabilities"],
                               expected, atol=1e-5)
    assert (path / "assets" / "labels.txt").read_text().split() == labels
    assert "base_path: \"/models/run\"" in (tmp_path / "exports" / "models.config").read_text()
    assert export.main(["--run_dir", str(run), "--which", "teacher", "--version", "7"]) == 0
    assert (tmp_path / "exports" / "run-teacher" / "7" / "saved_model.pb").is_file()
    # A bfloat16 variant: same signature and float32 outputs, bf16 matmuls inside, close scores.
    assert export.main(["--run_dir", str(run), "--precision", "bfloat16"]) == 0
    bf16_path = tmp_path / "exports" / "run-bf16" / "1"
    bf16 = tf.saved_model.load(str(bf16_path)).signatures["serving_default"]
    out = bf16(input_ids=ids, attention_mask=mask)
    assert out["probabilities"].dtype == tf.float32 and out["label_ids"].dtype == tf.int32
    np.testing.assert_allclose(out["probabilities"], expected, atol=3e-2)
    from tensorflow.core.protobuf import saved_model_pb2

    graph = saved_model_pb2.SavedModel.FromString((bf16_path / "saved_model.pb").read_bytes())
    matmuls = [n.attr["T"].type for f in graph.meta_graphs[0].graph_def.library.function
               for n in f.node_def if n.op in ("MatMul", "BatchMatMulV2")]
    assert matmuls and set(matmuls) == {tf.bfloat16.as_datatype_enum}
    assert export.main(["--run_dir", str(tmp_path / "nowhere")]) == 2
    # Weights that do not fit the model their folder describes are refused, never half loaded.
    for f in os.listdir(run / "student"):
        if f.startswith("weights"):
            os.remove(run / "student" / f)
    for f in os.listdir(run / "teacher"):
        if f.startswith("weights"):
            shutil.copy(run / "teacher" / f, run / "student" / f)
    assert export.main(["--run_dir", str(run)]) == 2


# --------------------------------------------------------------------------- REST client


def rest_predict(fn, body: dict) -> dict:
    """What TF Serving's REST predict API does with a request body, run in-process."""
    specs = fn.structured_input_signature[1]
    if "instances" in body:
        columns = {k: [inst[k] for inst in body["instances"]] for k in specs}
        out = fn(**{k: tf.constant(v, specs[k].dtype) for k, v in columns.items()})
        n = len(body["instances"])
        return json.loads(json.dumps(
            {"predictions": [{k: v[i].numpy().tolist() for k, v in out.items()}
                             for i in range(n)]}))
    out = fn(**{k: tf.constant(body["inputs"][k], specs[k].dtype) for k in specs})
    return json.loads(json.dumps({"outputs": {k: v.numpy().tolist() for k, v in out.items()}}))


@pytest.mark.parametrize("fmt", ["instances", "inputs"])
def test_client_request_and_response_through_rest_shapes(text_export, fmt):
    _, _, path = text_export
    tok, labels = client.load_assets(path)
    fn = tf.saved_model.load(path).signatures["serving_default"]
    sentences = ["John Smith visited Paris .", "  Köln  ist schön", "",
                 " ".join(["Mary met John in London"] * 6)]
    body, plan = client.build_request(tok, sentences, MAX_LEN, fmt)
    assert json.loads(json.dumps(body)) == body
    result = client.parse_response(rest_predict(fn, body), plan, labels, sentences)
    tagger = predict.ExportedTagger(path)
    tags, scores = tagger.tag_with_scores(
        [predict.data_lib.Sentence(s.split(), None) for s in sentences], 4, MAX_LEN)
    assert [r["tags"] for r in result] == tags
    for r, s, sc in zip(result, sentences, scores):
        assert r["text"] == s
        np.testing.assert_allclose(r["scores"], sc, atol=1e-5)
        expected = predict.entity_spans(s, predict.word_offsets(s), r["tags"], sc)
        assert r["entities"] == expected
        for e in r["entities"]:
            assert s[e["start"]:e["end"]] == e["text"]


def test_entity_spans_from_iob2():
    s = "  Angela Merkel visited New  York ."
    offsets = predict.word_offsets(s)
    tags = ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"]
    spans = predict.entity_spans(s, offsets, tags, [0.9, 0.7, 1, 0.5, 0.5, 1])
    assert spans == [
        {"text": "Angela Merkel", "type": "PER", "start": 2, "end": 15, "score": 0.8,
         "entity_group": "PER", "word": "Angela Merkel"},
        {"text": "New  York", "type": "LOC", "start": 24, "end": 33, "score": 0.5,
         "entity_group": "LOC", "word": "New  York"}]
    assert client.entity_spans(s, client.word_offsets(s), tags, [0.9, 0.7, 1, 0.5, 0.5, 1]) == spans
    # A stray I- starts an entity (as seqeval reads it); a type change closes one.
    assert [e["text"] for e in predict.entity_spans("a b c", predict.word_offsets("a b c"),
                                                   ["I-PER", "B-LOC", "I-PER"], [1, 1, 1])] == [
        "a", "b", "c"]


# --------------------------------------------------------------------------- predict CLI


def test_predict_streams_raw_text_to_jsonl_spans(text_export, tmp_path, monkeypatch):
    import io

    _, _, path = text_export
    lines = ["John Smith visited Paris .", "", "  Köln\u00a0ist schön ", "Acme"] * 3
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    read = []
    original = predict.read_records

    def spy(*args, **kwargs):  # records are pulled chunk by chunk, never all at once
        for r in original(*args, **kwargs):
            read.append(r)
            yield r

    monkeypatch.setattr(predict, "read_records", spy)
    out = io.StringIO()
    writes = []
    out.write = lambda text, w=out.write: (writes.append(len(read)), w(text))[1]
    counts = predict.run(path, str(src), out, "jsonl", batch_size=4, max_seq_length=MAX_LEN,
                         chunk_size=4, progress=False)
    assert counts == {"sentences_in": 9, "words_in": 27, "sentences_out": 9, "words_out": 27}
    assert writes[0] <= 5  # the first chunk was written before the rest of the file was read
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["text"] for r in records] == [x for x in lines if x.strip()]
    tagger = predict.ExportedTagger(path)
    for r in records:
        tags, scores = tagger.tag_with_scores(
            [predict.data_lib.Sentence(r["text"].split(), None)], 4, MAX_LEN)
        assert r["entities"] == predict.entity_spans(r["text"], predict.word_offsets(r["text"]),
                                                    tags[0], scores[0])
        for e in r["entities"]:
            assert r["text"][e["start"]:e["end"]] == e["text"]


def test_predict_reads_conll_and_xtreme_prefixes():
    records = list(predict.read_records(fixture_path("tiny_xtreme.tsv")))
    from xtremedistil_tf import data as data_lib

    expected = data_lib.read_unlabelled(fixture_path("tiny_xtreme.tsv"))
    assert [r.sentence.words for r in records] == [s.words for s in expected]
    assert [r.sentence.lang for r in records] == [s.lang for s in expected]
    first = records[0]
    assert first.text == "Angela Merkel visited Paris ."
    assert [first.text[a:b] for a, b in first.offsets] == list(first.sentence.words)


def test_predict_raw_lines_with_lang_prefixes_keep_offsets(tmp_path):
    src = tmp_path / "x.txt"
    src.write_text("en:Angela en:Merkel en:visited\nde:Köln de:ist\n", encoding="utf-8")
    records = list(predict.read_records(str(src)))
    assert [r.sentence.lang for r in records] == ["en", "de"]
    r = records[0]
    assert [r.text[a:b] for a, b in r.offsets] == ["Angela", "Merkel", "visited"]


def test_predict_bad_input_is_a_data_error(tmp_path):
    from xtremedistil_tf import data as data_lib

    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\nbad \xff byte\n")
    with pytest.raises(data_lib.DataError, match=r"bad.txt:2: not valid UTF-8"):
        list(predict.read_records(str(bad)))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(data_lib.DataError, match="no sentences"):
        list(predict.read_records(str(empty)))
