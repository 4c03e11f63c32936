"""Tag text with an exported model.

    python -m xtremedistil_tf.predict --model saved_models/default/1 --input text.txt \
        [--output tagged.conll] [--format conll|jsonl] [--batch_size 64]

`--model` is a SavedModel version folder or a LiteRT one (`saved_models/default-litert/1`,
see `litert`): the same outputs either way.

The input is raw text (one sentence per line, whitespace-separated words) or a CoNLL file (first
column read, tags ignored; "lang:token" prefixes stripped as in training files). It is read
incrementally, `--chunk_size` sentences at a time, so memory does not grow with the file.
Inside a chunk, windows are batched by length (`features.make_batches` buckets), and a progress
bar on stderr counts bytes read.

Output, in input order, one record per input sentence:
- `conll`: `token<TAB>tag` lines with a blank line after each sentence; every input word gets
  exactly one tag (long sentences are windowed and merged back);
- `jsonl`: one JSON object per sentence, `{"text": ..., "entities": [{"text", "type", "start",
  "end", "score", "entity_group", "word"}]}` (the last two: Hugging Face pipeline's names for
  type and text), offsets being character offsets in `text` (the input line for raw text;
  the words joined by single spaces for CoNLL) and score the mean probability of the entity's
  word tags.

The counts of sentences and words read and written are reported, and must agree.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import xtremedistil_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import numpy as np
from absl import app, flags

from xtremedistil_tf import startup

if __name__ == "__main__":  # a command: TensorFlow's start-up lines stay out of its output
    startup.quiet_tensorflow(startup.verbosity_from_argv(sys.argv[1:]))

from xtremedistil_tf import data as data_lib, export_folders, features, litert, serving_text

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The CLI's flags; defined only when run as a program, so that importing this module
    next to `xtremedistil_tf.flags` (which has its own --batch_size, --max_seq_length) works."""
    flags.DEFINE_string("model", None, "An exported SavedModel folder "
                        "(saved_models/<name>/<version>), LiteRT folder "
                        "(saved_models/<name>-litert[-int8]/<version>) or Hugging Face export "
                        "(saved_models/<name>-hf/<version>).")
    flags.DEFINE_string("input", None, "Raw text (one sentence per line) or CoNLL file.")
    flags.DEFINE_string("output", "-", "Output file ('-': stdout).")
    flags.DEFINE_enum("format", "conll", ["conll", "jsonl"], "conll: token<TAB>tag lines; jsonl: "
                      "entity spans per sentence.")
    flags.DEFINE_enum("layout", "auto", list(data_lib.LAYOUTS), "Input layout (auto: detected "
                      "from the first --peek_lines lines).")
    flags.DEFINE_integer("batch_size", 64, "Windows per batch.")
    flags.DEFINE_integer("max_seq_length", 128, "Sub-words per window (long sentences are split).")
    flags.DEFINE_integer("chunk_size", 2048, "Sentences read and tagged at a time.")
    flags.DEFINE_integer("peek_lines", 2000, "Lines read to detect the layout and lang: prefixes.")


class ExportedTagger:
    """An exported model with its labels and tokenizer, read from its `assets/` folder: a
    SavedModel (`saved_models/<name>/<version>`), a LiteRT export
    (`saved_models/<name>-litert[-int8]/<version>`, see `litert`), or from the folder itself
    (a Hugging Face export, `export_hf`)."""

    def __init__(self, model_dir: str):
        import transformers

        if os.path.isfile(os.path.join(model_dir, "config.json")):
            self._load_hf(model_dir)
            return
        assets = os.path.join(model_dir, "assets")
        if not os.path.isfile(os.path.join(assets, export_folders.LABELS_FILE)):
            raise ValueError(f"{model_dir}: not an exported model (no assets/labels.txt); give "
                             "a saved_models/<name>/<version> folder")
        with open(os.path.join(assets, export_folders.LABELS_FILE), encoding="utf-8") as f:
            self.labels = [line.rstrip("\n") for line in f if line.strip()]
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(assets)
        if litert.is_litert(model_dir):
            self.run = litert.Model(model_dir)
            return
        import tensorflow as tf

        # Exports with `tag_text` hold tensorflow-text ops, registered by importing it.
        serving_text.available()
        self.serve = tf.saved_model.load(model_dir).signatures["serving_default"]

        def run(input_ids, attention_mask):
            out = self.serve(input_ids=tf.constant(input_ids),
                             attention_mask=tf.constant(attention_mask))
            return {k: v.numpy() for k, v in out.items()}

        self.run = run

    def _load_hf(self, model_dir: str) -> None:
        import tensorflow as tf
        import transformers

        config = transformers.AutoConfig.from_pretrained(model_dir)
        self.labels = [config.id2label[i] for i in range(len(config.id2label))]
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
        model = transformers.TFAutoModelForTokenClassification.from_pretrained(model_dir)

        @tf.function(reduce_retracing=True, autograph=False)
        def serve(input_ids, attention_mask):
            logits = model(input_ids=input_ids, attention_mask=attention_mask,
                           training=False).logits
            probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
            return {"label_ids": tf.argmax(probabilities, -1, output_type=tf.int32),
                    "probabilities": probabilities}

        self.serve = serve

        def run(input_ids, attention_mask):
            out = serve(tf.constant(input_ids), tf.constant(attention_mask))
            return {k: v.numpy() for k, v in out.items()}

        self.run = run

    def tag_with_scores(self, sentences: Sequence[data_lib.Sentence], batch_size: int,
                        max_seq_length: int) -> tuple[list[list[str]], list[np.ndarray]]:
        """Tags of every word of every sentence (first sub-word's label), and their probability."""
        windows = features.make_windows(sentences, self.tokenizer, None, max_seq_length)
        batches = features.make_batches(windows, batch_size, max_seq_length,
                                        self.tokenizer.pad_token_id)
        per_window: list = [None] * len(windows)
        for batch in batches:
            out = self.run(batch["input_ids"], batch["attention_mask"])
            ids = np.take_along_axis(out["label_ids"], batch["word_index"], axis=1)
            probs = np.take_along_axis(out["probabilities"],
                                       batch["word_index"][..., None], axis=1)
            scores = np.take_along_axis(probs, ids[..., None], axis=2)[..., 0]
            for row, arr in features.batch_rows(batch, np.stack([ids, scores], -1)):
                per_window[row] = arr
        merged = features.merge_windows(windows, per_window, len(sentences),
                                        [len(s.words) for s in sentences])
        tags = [[self.labels[int(i)] for i in m[:, 0]] if len(m) else [] for m in merged]
        return tags, [m[:, 1].astype(np.float32) if len(m) else np.zeros(0, np.float32)
                      for m in merged]

    def tag(self, sentences: Sequence[data_lib.Sentence], batch_size: int,
            max_seq_length: int) -> list[list[str]]:
        """Tags of every word of every sentence (first sub-word's label)."""
        return self.tag_with_scores(sentences, batch_size, max_seq_length)[0]


# --------------------------------------------------------------------------- spans


def word_offsets(text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of the words of `text`, as `text.split()` splits it."""
    return [m.span() for m in re.finditer(r"\S+", text)]


def entity_spans(text: str, offsets: Sequence[tuple[int, int]], tags: Sequence[str],
                 scores: Sequence[float]) -> list[dict]:
    """IOB2 word tags -> entities `{"text", "type", "start", "end", "score"}`, plus the names
    Hugging Face's token-classification pipeline gives them: `entity_group` (= type) and
    `word` (= text), so code written for either reads both.

    An `I-` tag that does not continue an entity of its type starts one (as seqeval reads it);
    the score is the mean probability of the entity's word tags, rounded to 4 places.
    """
    spans: list[dict] = []
    current = None  # [type, first word, last word]
    for i, tag in enumerate([*tags, "O"]):
        kind = tag[2:] if tag[:2] in ("B-", "I-") else None
        if current and not (tag.startswith("I-") and kind == current[0]):
            t, a, b = current
            start, end = offsets[a][0], offsets[b][1]
            score = round(float(np.mean([float(s) for s in scores[a:b + 1]])), 4)
            spans.append({"text": text[start:end], "type": t, "start": start, "end": end,
                          "score": score, "entity_group": t, "word": text[start:end]})
            current = None
        if kind and current is None:
            current = [kind, i, i]
        elif kind:
            current[2] = i
    return spans


# --------------------------------------------------------------------------- streaming input


class Record(NamedTuple):
    """One input sentence: its words, the text its offsets refer to, and the words' offsets."""

    sentence: data_lib.Sentence
    text: str
    offsets: list[tuple[int, int]]


def _lines(path: str, on_bytes: Callable[[int], None]) -> Iterator[str]:
    if not os.path.exists(path):
        raise data_lib.DataError(path, "file not found", "check the path")
    if os.path.isdir(path):
        raise data_lib.DataError(path, "is a directory, not a file", "give the path of a file")
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            on_bytes(len(raw))
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise data_lib.DataError(
                    f"{path}:{number}", f"not valid UTF-8 (byte 0x{raw[e.start]:02x})",
                    "re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8") from None
            # Only "\n" ends lines, as in data._read_lines (U+2028 may sit inside a token).
            yield line[:-1] if line.endswith("\n") else line


def _blocks(path: str, lines: Iterator[str],
            conll: bool) -> Iterator[tuple[int, list[str], str | None]]:
    """(first line number, tokens, the line for raw text) per sentence."""
    tokens: list[str] = []
    start = 0
    for number, line in enumerate(lines, start=1):
        line = line[:-1] if line.endswith("\r") else line
        if not conll:
            if line.strip():
                yield number, line.split(), line
            continue
        if not line.strip():
            if tokens:
                yield start, tokens, None
            tokens = []
            continue
        token = (line.rstrip().split("\t") if "\t" in line else line.split())[0].strip()
        if token == data_lib.DOCSTART:
            if tokens:
                yield start, tokens, None
            tokens = []
            continue
        if not token:
            raise data_lib.DataError(f"{path}:{number}", "empty token",
                                     "remove the line or put the token in column 1")
        start = start if tokens else number
        tokens.append(token)
    if tokens:
        yield start, tokens, None


def read_records(path: str, layout: str = "auto", peek_lines: int = 2000,
                 on_bytes: Callable[[int], None] = lambda n: None) -> Iterator[Record]:
    """Streams the sentences of raw text or CoNLL, as `data.read_unlabelled` reads them.

    The layout (`auto`) and whether every token has a "lang:" prefix are decided on the first
    `peek_lines` lines, which is what makes reading incremental.

    Raises:
        data.DataError: missing or non-UTF-8 file, no sentence, an empty token, mixed languages
            in one sentence.
    """
    lines = _lines(path, on_bytes)
    head = list(itertools.islice(lines, peek_lines))
    conll = layout == "conll" or (layout == "auto" and data_lib.looks_like_conll(head))
    head_blocks = list(_blocks(path, iter(head), conll))
    xtreme = bool(head_blocks) and all(data_lib.LANG_PREFIX.match(t)
                                       for _, tokens, _ in head_blocks for t in tokens)
    count = 0
    for start, tokens, line in _blocks(path, itertools.chain(head, lines), conll):
        lang = None
        if xtreme:
            lang, words = data_lib.strip_lang(path, start, tokens, token_per_line=conll)
        else:
            words = tokens
        if line is None:
            text = " ".join(words)
            offsets = word_offsets(text)
        else:
            text = line
            offsets = [(a + len(t) - len(w), b)
                       for (a, b), t, w in zip(word_offsets(line), tokens, words)]
        count += 1
        yield Record(data_lib.Sentence(words, None, lang, f"{path}:{start}"), text, offsets)
    if not count:
        raise data_lib.DataError(f"{path}:1", "no sentences found", "check the file's layout")


def _chunks(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
    while chunk := list(itertools.islice(records, size)):
        yield chunk


def format_conll(sentences: Sequence[data_lib.Sentence], tags: Sequence[Sequence[str]]) -> str:
    """`token<TAB>tag` lines, a blank line after each sentence."""
    return "".join(
        "".join(f"{w}\t{t}\n" for w, t in zip(s.words, ts, strict=True)) + "\n"
        for s, ts in zip(sentences, tags, strict=True)
    )


def format_jsonl(records: Sequence[Record], tags: Sequence[Sequence[str]],
                 scores: Sequence[Sequence[float]]) -> str:
    """One `{"text", "entities"}` JSON object per line."""
    return "".join(
        json.dumps({"text": r.text, "entities": entity_spans(r.text, r.offsets, t, s)},
                   ensure_ascii=False) + "\n"
        for r, t, s in zip(records, tags, scores, strict=True))


def run(model: str, input_path: str, output, output_format: str = "conll", batch_size: int = 64,
        max_seq_length: int = 128, chunk_size: int = 2048, layout: str = "auto",
        peek_lines: int = 2000, progress: bool | None = None) -> dict:
    """Tags `input_path` into the open text file `output`; returns the counts read and written.

    Raises:
        RuntimeError: the counts written differ from the counts read (never expected).
    """
    from tqdm import tqdm

    tagger = ExportedTagger(model)
    counts = {"sentences_in": 0, "words_in": 0, "sentences_out": 0, "words_out": 0}
    with tqdm(total=os.path.getsize(input_path) if os.path.isfile(input_path) else None,
              unit="B", unit_scale=True, file=sys.stderr,
              disable=None if progress is None else not progress) as bar:
        records = read_records(input_path, layout, peek_lines, on_bytes=bar.update)
        for chunk in _chunks(records, chunk_size):
            sentences = [r.sentence for r in chunk]
            counts["sentences_in"] += len(chunk)
            counts["words_in"] += sum(len(s.words) for s in sentences)
            tags, scores = tagger.tag_with_scores(sentences, batch_size, max_seq_length)
            if output_format == "jsonl":
                output.write(format_jsonl(chunk, tags, scores))
            else:
                output.write(format_conll(sentences, tags))
            counts["sentences_out"] += len(tags)
            counts["words_out"] += sum(len(t) for t in tags)
    if (counts["sentences_in"], counts["words_in"]) != (counts["sentences_out"],
                                                        counts["words_out"]):
        raise RuntimeError(f"read {counts['sentences_in']} sentences, {counts['words_in']} "
                           f"words but wrote {counts['sentences_out']}, {counts['words_out']}")
    return counts


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    startup.quiet_tensorflow(startup.absl_verbosity())
    for name in ("model", "input"):
        if not getattr(FLAGS, name):
            print(f"error: --{name} is required", file=sys.stderr)
            return 2
    import transformers

    transformers.logging.set_verbosity_error()  # load reports of HF exports are noise
    out = None
    try:
        out = sys.stdout if FLAGS.output == "-" else open(FLAGS.output, "w", encoding="utf-8")
        counts = run(FLAGS.model, FLAGS.input, out, FLAGS.format, FLAGS.batch_size,
                     FLAGS.max_seq_length, FLAGS.chunk_size, FLAGS.layout, FLAGS.peek_lines)
    except (ValueError, OSError, RuntimeError) as e:
        if os.environ.get("XTREMEDISTIL_DEBUG"):
            raise
        print(f"error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    finally:
        if out is not None and out is not sys.stdout:
            out.close()
    print(f"tagged {counts['sentences_out']} sentences, {counts['words_out']} words "
          f"(read {counts['sentences_in']} sentences, {counts['words_in']} words)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
