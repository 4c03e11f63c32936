"""Exporting a tagger as a TF Serving SavedModel (`saved_models/<name>/<version>/`).

The `serving_default` signature takes `input_ids` and `attention_mask` (int32 `[batch, tokens]`)
and returns `label_ids` (int32 `[batch, tokens]`; Viterbi-decoded for CRF heads) and
`probabilities` (float32 `[batch, tokens, labels]`; softmax of the logits, or for CRF heads the
chain's posterior marginals at real sub-words). `assets/labels.txt` lists label names in id
order and the tokenizer files sit beside it, so a client that never imports this package can
tokenize and read tags. It uses core TensorFlow ops only.

With `text_signature=True` the same SavedModel also has `tag_text` (see `serving_text`): a batch
of sentences in (string `[batch]`), `words`, `tags` (string `[batch, max_words]`, "" padded) and
`scores` out, tokenized in the graph by tensorflow-text. Its ops are then part of the SavedModel,
so *loading it at all* needs them: `import tensorflow_text` before `tf.saved_model.load`, and a
TF Serving build that links the same tensorflow-text ops. That is why it is off by default.

Every export rewrites `<export_dir>/models.config`, the TF Serving model config that lists every
exported model (for `tensorflow_model_server --model_config_file`).

    python -m xtremedistil_tf.export --run_dir runs/default [--name N] [--version V] \
        [--export_dir saved_models] [--which student|teacher] [--text_signature] \
        [--precision float32|bfloat16] [--format savedmodel|litert|hf] \
        [--quantize none|dynamic_int8] [--trim_vocab]

rebuilds a model from a finished run folder and exports it. `--format litert` writes
`<name>-litert[-int8]/<version>/model.tflite` beside the SavedModels instead (see `litert`),
`--format hf` a Hugging Face token-classification folder `<name>-hf/<version>/` (`export_hf`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator

import xtremedistil_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from xtremedistil_tf import startup

if __name__ == "__main__":  # a command: TensorFlow's start-up lines stay out of its output
    startup.quiet_tensorflow(startup.verbosity_from_argv(sys.argv[1:]))

import tensorflow as tf

LABELS_FILE = "labels.txt"
MODELS_CONFIG = "models.config"
# Where `scripts/serve.sh` mounts the export folder in the tensorflow/serving container.
CONTAINER_BASE = "/models"


def max_positions(model) -> int:
    """Tokens per sequence the encoder's position embeddings allow."""
    from xtremedistil_tf import models

    return models.max_positions(model.encoder.config)


def serving_outputs(model, input_ids, attention_mask) -> dict:
    """What `serving_default` returns, without its input checks (every export format's graph).

    Returns:
        `label_ids` int32 `[B, T]` (Viterbi for CRF heads) and `probabilities` float32
        `[B, T, K]`; bfloat16 models decode in float32.
    """
    logits = model({"input_ids": input_ids, "attention_mask": attention_mask},
                   training=False)["logits"]
    logits = tf.cast(logits, tf.float32)
    return {"label_ids": model.decode(logits, input_ids, attention_mask),
            "probabilities": model.probabilities(logits, input_ids, attention_mask)}


class _Tagger(tf.Module):
    """The exported object: the model, its `serving_default` signature and its assets."""

    def __init__(self, model, asset_paths):
        super().__init__()
        self.model = model
        self.assets = [tf.saved_model.Asset(p) for p in asset_paths]
        self._vocab_size = int(model.encoder.config.vocab_size)
        self._max_positions = max_positions(model)

    def _forward(self, input_ids, attention_mask):
        # Clear messages for inputs TF Serving clients get wrong; without them the failure is
        # an opaque gather or matmul error deep in the encoder.
        same_shape = tf.debugging.assert_equal(
            tf.shape(input_ids), tf.shape(attention_mask),
            message="input_ids and attention_mask must have the same shape [batch, tokens]")
        # The other checks read input_ids after this one: a wrongly shaped input then always
        # fails here, not (depending on op scheduling) inside another check's reduction.
        with tf.control_dependencies([same_shape]):
            input_ids = tf.identity(input_ids)
        checks = [
            tf.debugging.assert_less_equal(
                tf.shape(input_ids)[1], self._max_positions,
                message=f"at most {self._max_positions} tokens per sequence; split longer "
                        "sentences into windows"),
            tf.debugging.assert_non_negative(input_ids, message="input_ids must be >= 0"),
            tf.debugging.assert_less(
                input_ids, self._vocab_size,
                message=f"input_ids must be < {self._vocab_size} (the vocabulary size); is the "
                        "client using the tokenizer in assets/?"),
        ]
        with tf.control_dependencies(checks):
            input_ids = tf.identity(input_ids)
        return serving_outputs(self.model, input_ids, attention_mask)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.int32, name="input_ids"),
            tf.TensorSpec([None, None], tf.int32, name="attention_mask"),
        ]
    )
    def serve(self, input_ids, attention_mask):
        return self._forward(input_ids, attention_mask)


class _TextTagger(_Tagger):
    """`_Tagger` plus the `tag_text` signature (tensorflow-text ops)."""

    def __init__(self, model, asset_paths, labels, tokenizer, max_seq_length):
        from xtremedistil_tf import serving_text

        super().__init__(model, asset_paths)
        self.text_tokenizer = serving_text.make_tokenizer(
            serving_text.tokenizer_settings(tokenizer))
        self._ids = {"cls": tokenizer.cls_token_id, "sep": tokenizer.sep_token_id,
                     "pad": tokenizer.pad_token_id, "unk": tokenizer.unk_token_id}
        self._labels = list(labels)
        self._max_seq_length = min(max_seq_length, self._max_positions)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="sentences")])
    def tag_text(self, sentences):
        from xtremedistil_tf import serving_text

        inputs = serving_text.build_inputs(sentences, self.text_tokenizer, self._ids,
                                           self._max_seq_length)
        out = self._forward(inputs["input_ids"], inputs["attention_mask"])
        return serving_text.word_outputs(inputs, out["label_ids"], out["probabilities"],
                                         tf.constant(self._labels))


def variables_mb(path: str) -> float:
    """Size of an export's weights (`variables/`), in MB (10^6 bytes)."""
    folder = os.path.join(path, "variables")
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)) / 1e6


def next_version(base: str) -> int:
    """1 + the largest integer-named version folder under `base` (1 when there is none)."""
    if not os.path.isdir(base):
        return 1
    versions = [int(d) for d in os.listdir(base) if d.isdigit()]
    return max(versions, default=0) + 1


def exported_models(export_dir: str) -> list[str]:
    """Names of the models under `export_dir`: folders with a version holding saved_model.pb."""
    if not os.path.isdir(export_dir):
        return []
    names = []
    for name in sorted(os.listdir(export_dir)):
        base = os.path.join(export_dir, name)
        if name.startswith(".") or not os.path.isdir(base):
            continue
        if any(v.isdigit() and os.path.isfile(os.path.join(base, v, "saved_model.pb"))
               for v in os.listdir(base)):
            names.append(name)
    return names


def models_config_text(names: list[str], base: str = CONTAINER_BASE) -> str:
    """TF Serving's `ModelServerConfig` (text protobuf) serving `names` from `base/<name>`."""
    entries = "".join(
        "  config {\n"
        f"    name: {json.dumps(name)}\n"
        f"    base_path: {json.dumps(base.rstrip('/') + '/' + name)}\n"
        '    model_platform: "tensorflow"\n'
        "  }\n"
        for name in names)
    return "model_config_list {\n" + entries + "}\n"


def write_models_config(export_dir: str, base: str = CONTAINER_BASE) -> str:
    """Rewrites `export_dir/models.config` atomically from the folders there; returns its path.

    Base paths are `base/<name>`: `/models/<name>` where `scripts/serve.sh` mounts `export_dir`
    in the tensorflow/serving container (it rewrites them for a local `tensorflow_model_server`).
    The file is rebuilt from what is on disk, so concurrent exports cannot lose each other's
    entries: the last writer saw every finished version.
    """
    path = os.path.join(export_dir, MODELS_CONFIG)
    fd, tmp = tempfile.mkstemp(prefix=f".{MODELS_CONFIG}-", dir=export_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(models_config_text(exported_models(export_dir), base))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def export(model, labels, tokenizer, export_dir: str, name: str, version: int | None = None,
           text_signature: bool = False, max_seq_length: int = 512) -> str:
    """Writes the SavedModel to `export_dir/name/version` atomically and returns that path.

    Args:
        model: a `TokenClassifier`.
        labels: label names in id order.
        tokenizer: the Hugging Face tokenizer the model reads (saved into `assets/`).
        export_dir: the model base folder (TF Serving's `--model_base_path` parent).
        name: model name (a folder).
        version: version number; default the next free one. An existing version is never
            overwritten.
        text_signature: also add `tag_text` (needs tensorflow-text and a WordPiece vocabulary;
            the SavedModel then needs tensorflow-text ops to load at all, see the module doc).
        max_seq_length: sub-words per sentence in `tag_text`, special tokens included (capped
            by the model's position embeddings); later words are not tagged.

    Raises:
        FileExistsError: `version` already exists.
        serving_text.UnsupportedTokenizer: `text_signature` with a tokenizer it cannot mirror.
        ImportError: `text_signature` without tensorflow-text installed.
    """
    base = os.path.join(export_dir, name)
    version = version or next_version(base)
    final = os.path.join(base, str(version))
    if os.path.exists(final):
        raise FileExistsError(f"{final} exists; exported versions are never overwritten")
    if text_signature:
        from xtremedistil_tf import serving_text

        if not serving_text.available():
            raise ImportError("text_signature needs tensorflow-text: pip install "
                              "tensorflow-text==2.21.*")
        serving_text.tokenizer_settings(tokenizer)  # fails before any work if unsupported
    with new_version(final) as staging:
        files_dir = os.path.join(staging, "files")
        paths = write_assets(files_dir, labels, tokenizer)
        if text_signature:
            module = _TextTagger(model, paths, labels, tokenizer, max_seq_length)
            signatures = {"serving_default": module.serve, "tag_text": module.tag_text}
        else:
            module = _Tagger(model, paths)
            signatures = {"serving_default": module.serve}
        tf.saved_model.save(module, os.path.join(staging, "model"), signatures=signatures)
    write_models_config(export_dir)
    return final


def write_assets(folder: str, labels, tokenizer) -> list[str]:
    """Writes `labels.txt` (one label per line, id order) and the tokenizer files into `folder`;
    returns their paths, sorted."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, LABELS_FILE), "w", encoding="utf-8") as f:
        f.write("".join(label + "\n" for label in labels))
    tokenizer.save_pretrained(folder)
    return sorted(os.path.join(folder, p) for p in os.listdir(folder))


@contextlib.contextmanager
def new_version(final: str) -> Iterator[str]:
    """Yields a staging folder; `<staging>/model` becomes `final` when the block succeeds.

    The staging folder is a hidden sibling of `final`, so the rename is atomic and a server or
    client never sees a half-written version; it is removed whatever happens.

    Raises:
        FileExistsError: `final` exists (also when it appeared while the block ran).
    """
    if os.path.exists(final):
        raise FileExistsError(f"{final} exists; exported versions are never overwritten")
    base, version = os.path.split(final)
    os.makedirs(base, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{version}-", dir=base)
    try:
        yield staging
        try:
            os.rename(os.path.join(staging, "model"), final)
        except OSError:
            if os.path.exists(final):
                raise FileExistsError(
                    f"{final} exists; exported versions are never overwritten") from None
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------- from a run folder


def _run_config(run_dir: str):
    """The run's `RunConfig` from its `state.json`, with relative paths made usable from here.

    `state.json` holds the resolved configuration (default teacher and data paths filled in),
    unlike `flags.txt`. Relative paths were relative to the run's working directory, which is
    recovered from `run_dir` and the recorded `output_dir`.
    """
    from xtremedistil_tf import config as config_lib, data as data_lib

    state_path = os.path.join(run_dir, "state.json")
    if not os.path.isfile(state_path):
        raise ValueError(f"{run_dir}: no state.json; give the --output_dir of a run_distil.py run")
    with open(state_path, encoding="utf-8") as f:
        state = json.load(f)
    s = state["settings"]
    recorded = os.path.normpath(s["output_dir"])
    here = os.path.abspath(run_dir)
    root = (here[: -len(recorded)] if not os.path.isabs(recorded) and here.endswith(recorded)
            else os.getcwd())

    def fix(p: str) -> str:
        if not p or os.path.isabs(p) or os.path.exists(p):
            return p
        candidate = os.path.join(root, p)
        return candidate if os.path.exists(candidate) else p

    def fix_spec(spec: str) -> str:  # "de=path" keeps its language
        lang, path = data_lib.file_language(spec)
        return f"{lang}={fix(path)}" if lang else fix(path)

    data = dict(s["data"])
    for k in ("train_files", "dev_files", "test_files", "transfer_files"):
        data[k] = tuple(fix_spec(x) for x in data[k])
    data["target_langs"] = tuple(data.get("target_langs", ()))
    teacher = dict(s["teacher"], model=fix(s["teacher"]["model"]))
    student = dict(s["student"])
    if student["model"] and not student["model"].startswith("teacher:"):
        student["model"] = fix(student["model"])
    distil = dict(s["distil"], stages=tuple(s["distil"]["stages"]))
    rest = {k: v for k, v in s.items() if k not in ("data", "teacher", "student", "distil")}
    rest["export_dir"] = os.path.join(root, rest["export_dir"]) if not os.path.isabs(
        rest["export_dir"]) else rest["export_dir"]
    cfg = config_lib.RunConfig(
        data=config_lib.DataConfig(**data), teacher=config_lib.TeacherConfig(**teacher),
        student=config_lib.StudentConfig(**student), distil=config_lib.DistilConfig(**distil),
        **rest)
    return cfg, state.get("done", {})


PRECISIONS = ("float32", "bfloat16")
FORMATS = ("savedmodel", "litert", "hf")  # --format of this command (LiteRT takes --quantize)


def rebuild(run_dir: str, which: str = "student", precision: str = "float32"):
    """Rebuilds a run's trained model the way `pipeline.run` built it, with its weights.

    With `precision="bfloat16"` the model is built under Keras' `mixed_bfloat16` policy:
    float32 variables (the same weights), bfloat16 matmuls and activations (AMX / tensor cores).

    Returns:
        (config, model, labels, tokenizer): `labels` are the model's own (a ready teacher keeps
        its checkpoint's label names).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"--precision={precision}: use one of {', '.join(PRECISIONS)}")
    previous = tf.keras.mixed_precision.global_policy().name
    tf.keras.mixed_precision.set_global_policy(
        "mixed_bfloat16" if precision == "bfloat16" else "float32")
    try:
        return _rebuild(run_dir, which)
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)


def _rebuild(run_dir: str, which: str):
    """The run's `which` model from its own folder (`models.load_model`: no teacher, no data),
    with the tokenizer it reads (saved beside it; runs that did not save it name it)."""
    from xtremedistil_tf import models

    cfg, _ = _run_config(run_dir)
    folder = os.path.join(run_dir, which)
    if not os.path.isfile(os.path.join(folder, "model.json")):
        raise ValueError(f"{folder}: no trained {which} (model.json) in this run; let the run "
                         "finish first")
    model, labels = models.load_model(folder, name=which)
    saved = os.path.join(folder, models.TOKENIZER_DIR)
    own = which == "student" and cfg.student.own_tokenizer
    tokenizer = models.load_tokenizer(
        saved if os.path.isdir(saved)
        else models.resolve_student_name(cfg.student.model) if own else cfg.teacher.model)
    return cfg, model, labels, tokenizer


# --export_formats of a run: litert_int8 = litert with --quantize=dynamic_int8.
EXPORT_FORMATS = ("savedmodel", "litert", "litert_int8")


def export_formats(model, labels, tokenizer, export_dir: str, name: str,
                   formats=("savedmodel",), version: int | None = None,
                   **savedmodel_kwargs) -> dict[str, str]:
    """Exports `model` in each of `formats` (`EXPORT_FORMATS`); returns `{format: folder}`.

    A SavedModel goes to `export_dir/<name>/<version>`, LiteRT to
    `export_dir/<name>-litert[-int8]/<version>` (see `litert.export`), each with the same
    `assets/`. `savedmodel_kwargs` go to `export`.
    """
    bad = [f for f in formats if f not in EXPORT_FORMATS]
    if bad or not formats:
        raise ValueError(f"export formats {bad or 'empty'}: use {', '.join(EXPORT_FORMATS)}")
    paths = {}
    for fmt in formats:
        if fmt == "savedmodel":
            paths[fmt] = export(model, labels, tokenizer, export_dir, name, version,
                                **savedmodel_kwargs)
        else:
            from xtremedistil_tf import litert

            quantize = "dynamic_int8" if fmt == "litert_int8" else "none"
            paths[fmt] = litert.export(model, labels, tokenizer, export_dir, name, version,
                                       quantize)
    return paths


def export_run(run_dir: str, which: str = "student", name: str | None = None,
               version: int | None = None, export_dir: str | None = None,
               text_signature: bool = False, precision: str = "float32",
               export_format: str = "savedmodel", quantize: str = "none",
               trim_vocab: bool = False) -> str:
    """Exports the student (or teacher) of a finished run; returns the version folder.

    Defaults follow the run: `export_dir` is the run's `--export_dir`, `name` its
    `--export_name` or the run folder's name (`-teacher` appended for the teacher, then
    `-bf16` for a bfloat16 export), and `tag_text` windows are the run's `--max_seq_length`.
    A bfloat16 export has the same signatures, dtypes and assets as a float32 one.
    `export_format="litert"` writes `<name>-litert[-int8]/<version>/model.tflite` instead,
    `export_format="hf"` a Hugging Face token-classification folder (`export_hf`) to
    `<name>-hf/<version>/`. With `trim_vocab` the model keeps only the sub-words of the run's
    training and transfer text (`vocab_trim`).
    """
    if which not in ("student", "teacher"):
        raise ValueError(f"--which={which}: use student or teacher")
    if export_format not in FORMATS:
        raise ValueError(f"--format={export_format}: use one of {', '.join(FORMATS)}")
    if export_format in ("litert", "hf") and (text_signature or precision != "float32"):
        raise ValueError(f"--format={export_format} takes neither --text_signature nor "
                         "--precision" + (" (use --quantize)" if export_format == "litert"
                                          else ""))
    if export_format != "litert" and quantize != "none":
        raise ValueError("--quantize applies to --format=litert only")
    fmt = export_format
    cfg, model, labels, tokenizer = rebuild(run_dir, which, precision)
    if fmt == "hf":
        from xtremedistil_tf import export_hf

        export_hf.check_exportable(model)  # before any trimming work
    if trim_vocab:
        model, tokenizer = _trimmed(cfg, model, tokenizer)
    if not name:
        name = cfg.export_name or os.path.basename(os.path.normpath(cfg.output_dir))
        name += "-teacher" if which == "teacher" and not name.endswith("-teacher") else ""
        name += "-bf16" if precision == "bfloat16" else ""
        name += "-hf" if fmt == "hf" else ""
    if fmt == "hf":
        return export_hf.export_hf(model, labels, tokenizer, export_dir or cfg.export_dir, name,
                                   version)
    kwargs = ({"text_signature": text_signature, "max_seq_length": cfg.data.max_seq_length}
              if fmt == "savedmodel" else {})
    fmt = "litert_int8" if quantize == "dynamic_int8" else fmt
    return export_formats(model, labels, tokenizer, export_dir or cfg.export_dir, name,
                          (fmt,), version, **kwargs)[fmt]


def _trimmed(cfg, model, tokenizer):
    """The model and tokenizer with only the sub-words of the run's training and transfer text."""
    from xtremedistil_tf import run_data, vocab_trim

    transfer = run_data.load_data(cfg.data).unlabelled["transfer"]
    model, tokenizer, info = vocab_trim.trim(model, tokenizer,
                                             vocab_trim.covered_ids(tokenizer, transfer))
    print(f"vocabulary trimmed: {info['vocab'][0]} -> {info['vocab'][1]} sub-words, "
          f"{info['params'][0]} -> {info['params'][1]} parameters", file=sys.stderr)
    return model, tokenizer


def define_flags(fv) -> None:
    """The command's flags (absl, like run_distil.py; see `cli`), defined into `fv`."""
    from absl import flags

    flags.DEFINE_string("run_dir", None, "The run's --output_dir.", flag_values=fv)
    flags.DEFINE_string("name", None, "Model name (default: the run's export name).",
                        flag_values=fv)
    flags.DEFINE_integer("version", None, "Version (default: the next free one).",
                         flag_values=fv)
    flags.DEFINE_string("export_dir", None, "Base folder (default: the run's --export_dir).",
                        flag_values=fv)
    flags.DEFINE_enum("which", "student", ["student", "teacher"], "Which model to export.",
                      flag_values=fv)
    flags.DEFINE_bool("text_signature", False, "Add the tag_text signature (needs "
                      "tensorflow-text to load).", flag_values=fv)
    flags.DEFINE_enum("precision", "float32", list(PRECISIONS), "bfloat16: bf16 matmuls "
                      "(float32 weights, inputs and outputs); see scripts/compare_precision.py "
                      "for its F1 and speed.", flag_values=fv)
    flags.DEFINE_enum("format", "savedmodel", list(FORMATS), "litert: "
                      "<name>-litert[-int8]/<version>/model.tflite (CPU processes and edge "
                      "devices), same assets; hf: a Hugging Face token-classification folder "
                      "(<name>-hf/<version>/: config.json, tf_model.h5, PyTorch-named "
                      "model.safetensors, tokenizer) for softmax heads.", flag_values=fv)
    flags.DEFINE_enum("quantize", "none", ["none", "dynamic_int8"], "litert only: "
                      "dynamic_int8 stores weights as int8 (~4x smaller).", flag_values=fv)
    flags.DEFINE_bool("trim_vocab", False, "Keep only the sub-words of the run's training and "
                      "transfer text (a much smaller embedding table).", flag_values=fv)


def run_from_flags(fv) -> int:
    """Exports as the parsed flags `fv` say; prints the version folder. Returns the exit code."""
    if not fv.run_dir:
        print("error: --run_dir is required (the run's --output_dir)", file=sys.stderr)
        return 2
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        path = export_run(fv.run_dir, fv.which, fv.name, fv.version, fv.export_dir,
                          fv.text_signature, fv.precision, fv.format, fv.quantize,
                          fv.trim_vocab)
    except (ValueError, OSError, ImportError) as e:
        if os.environ.get("XTREMEDISTIL_DEBUG"):
            raise
        print(f"error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    """In-process entry (tests, notebooks): `argv` are the flags (see `cli`)."""
    from xtremedistil_tf import cli

    return cli.main(define_flags, run_from_flags, "export", argv)


if __name__ == "__main__":
    from xtremedistil_tf import cli

    cli.run_app(define_flags, run_from_flags)
