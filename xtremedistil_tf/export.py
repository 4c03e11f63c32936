"""The export command: a finished run's student (or teacher) in the format a user serves.

    python -m xtremedistil_tf.export --run_dir runs/default [--name N] [--version V] \
        [--export_dir saved_models] [--which student|teacher] [--text_signature] \
        [--precision float32|bfloat16] [--format savedmodel|litert|hf] \
        [--quantize none|dynamic_int8] [--trim_vocab [--trim_text FILES]]

rebuilds the model from its run folder alone (`model_folders.load_model`: no teacher, no data) and
writes a TF Serving SavedModel `<name>/<version>/` (`savedmodel`), `--format litert`
`<name>-litert[-int8]/<version>/model.tflite` (`litert`), or `--format hf` a Hugging Face
token-classification folder `<name>-hf/<version>/` (`export_hf`), each beside the others under
`--export_dir` (`export_folders`). The pipeline writes its exports with `export_formats`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

import xtremedistil_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from xtremedistil_tf import startup

if __name__ == "__main__":  # a command: TensorFlow's start-up lines stay out of its output
    startup.quiet_tensorflow(startup.verbosity_from_argv(sys.argv[1:]))

import tensorflow as tf

from xtremedistil_tf import (
    precision as precision_lib,
    savedmodel,
)

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
    with precision_lib.policy("bfloat16" if precision == "bfloat16" else "none"):
        return _rebuild(run_dir, which)


def _rebuild(run_dir: str, which: str):
    """The run's `which` model and the tokenizer it reads, from its own folder
    (`model_folders.load_model`: no teacher, no data)."""
    from xtremedistil_tf import model_folders, models

    cfg, _ = _run_config(run_dir)
    folder = os.path.join(run_dir, which)
    if not os.path.isfile(os.path.join(folder, "model.json")):
        raise ValueError(f"{folder}: no trained {which} (model.json) in this run; let the run "
                         "finish first")
    model, labels = model_folders.load_model(folder, name=which)
    tokenizer = models.load_tokenizer(os.path.join(folder, model_folders.TOKENIZER_DIR))
    return cfg, model, labels, tokenizer


# --export_formats of a run: litert_int8 = litert with --quantize=dynamic_int8.
EXPORT_FORMATS = ("savedmodel", "litert", "litert_int8")


def export_formats(model, labels, tokenizer, export_dir: str, name: str,
                   formats=("savedmodel",), version: int | None = None,
                   **savedmodel_kwargs) -> dict[str, str]:
    """Exports `model` in each of `formats` (`EXPORT_FORMATS`); returns `{format: folder}`.

    A SavedModel goes to `export_dir/<name>/<version>`, LiteRT to
    `export_dir/<name>-litert[-int8]/<version>` (see `litert.export`), each with the same
    `assets/`. `savedmodel_kwargs` go to `savedmodel.export`.
    """
    bad = [f for f in formats if f not in EXPORT_FORMATS]
    if bad or not formats:
        raise ValueError(f"export formats {bad or 'empty'}: use {', '.join(EXPORT_FORMATS)}")
    paths = {}
    for fmt in formats:
        if fmt == "savedmodel":
            paths[fmt] = savedmodel.export(model, labels, tokenizer, export_dir, name, version,
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
               trim_vocab: bool = False, trim_text: str = "") -> str:
    """Exports the student (or teacher) of a finished run; returns the version folder.

    Defaults follow the run: `export_dir` is the run's `--export_dir`, `name` its
    `--export_name` or the run folder's name (`-teacher` appended for the teacher, then
    `-bf16` for a bfloat16 export), and `tag_text` windows are the run's `--max_seq_length`.
    A bfloat16 export has the same signatures, dtypes and assets as a float32 one.
    `export_format="litert"` writes `<name>-litert[-int8]/<version>/model.tflite` instead,
    `export_format="hf"` a Hugging Face token-classification folder (`export_hf`) to
    `<name>-hf/<version>/`. With `trim_vocab` the model keeps only the sub-words of the run's
    training and transfer text (`vocab_trim`), and of the unlabelled files `trim_text`.
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
    if trim_text and not trim_vocab:
        raise ValueError("--trim_text adds text to --trim_vocab's: give --trim_vocab too")
    fmt = export_format
    cfg, model, labels, tokenizer = rebuild(run_dir, which, precision)
    if fmt == "hf":
        from xtremedistil_tf import export_hf

        export_hf.check_exportable(model)  # before any trimming work
    if trim_vocab:
        model, tokenizer = trimmed(cfg, model, tokenizer, trim_text)
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


def trimmed(cfg, model, tokenizer, extra_text: str | Sequence[str] = ()):
    """The model and tokenizer with only the sub-words of the run's training and transfer text
    and of the unlabelled files `extra_text` (comma list or sequence; `lang=path` allowed)."""
    from xtremedistil_tf import data as data_lib, run_data, vocab_trim

    text = list(run_data.load_data(cfg.data).unlabelled["transfer"])
    if extra_text:
        text += data_lib.read_unlabelled_files(extra_text)
    model, tokenizer, _ = vocab_trim.trim_to_text(model, tokenizer, text)
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
    flags.DEFINE_string("trim_text", "", "With --trim_vocab: also keep the sub-words of these "
                        "unlabelled files (comma list; one sentence per line or CoNLL), e.g. "
                        "more text of the languages you serve: fewer unseen pieces.",
                        flag_values=fv)


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
                          fv.trim_vocab, fv.trim_text)
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
