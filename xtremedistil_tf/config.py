"""Frozen, validated configuration objects: the only thing library code takes from the command line.

Entry points turn flags into these dataclasses (see `flags.configs_from_flags`); every value is
checked in `__post_init__` with a `ValueError` that says what to change, so a bad flag fails before
any model is loaded. The field defaults here are the defaults of run_distil.py's flags too
(`flags.py` reads them), so a `RunConfig` built in Python runs what the command line runs.
"""

from __future__ import annotations

import dataclasses
import json
import re

TAG_SCHEMES = ("auto", "iob1", "iob2", "io", "bioes")
HEADS = ("softmax", "crf", "attention_softmax", "attention_crf")
STRATEGIES = ("xtremedistil", "tsl", "msd", "mtmt")
LOGIT_LOSSES = ("mse", "kl", "prob_mse")
REP_LAYERS = ("middle", "last", "uniform")
STAGE_NAMES = ("representations", "logits", "labels")
DISTRIBUTIONS = ("default", "mirrored", "multi_worker", "tpu")
# --mixed_precision values (see precision.py).
MIXED_PRECISION = ("none", "bfloat16", "float16")
HEAD_INITS = ("zero", "prior")
SOFTMAX_HEADS = ("softmax", "attention_softmax")  # heads that score each position on its own
# The first teacher layer with a per-layer classifier when --aux_heads turns them on
# (`TeacherConfig.aux_from_layer` is 0, none, by default).
AUX_FROM_LAYER = 4
# Kept equal to export.EXPORT_FORMATS (config imports no TensorFlow module).
EXPORT_FORMATS = ("savedmodel", "litert", "litert_int8")


PRESET = re.compile(r"^l(\d+)-h(\d+)$")  # a preset student shape: l<blocks>-h<width>
CUT = re.compile(r"^teacher:(\d+(,\d+)*)$")  # a student cut from the teacher: teacher:i,j,...


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the data is and how it becomes batches.

    Attributes:
        train_files, dev_files, test_files: labelled CoNLL or XTREME files.
        transfer_files: unlabelled text used (with the training sentences) for distillation.
        tag_scheme: scheme of the labelled files; everything is converted to IOB2.
        max_seq_length: sub-words per window, special tokens included; longer sentences are split
            into windows of whole words and merged back.
        batch_size: sentences (windows) per training batch.
        eval_batch_size: sentences per evaluation batch.
        label_all_subwords: train on every sub-word (with its word's tag), not only the first.
        source_lang, target_langs: the zero-shot protocol. With a source language, only its
            labelled sentences train (and its dev sentences choose models); sentences of the
            target languages in the training and transfer files are used as unlabelled text;
            every test language is scored, and the targets on average. Languages come from
            "lang:" token prefixes or "de=path" file specs.
    """

    train_files: tuple[str, ...]
    dev_files: tuple[str, ...]
    test_files: tuple[str, ...]
    transfer_files: tuple[str, ...] = ()
    tag_scheme: str = "auto"
    max_seq_length: int = 128
    batch_size: int = 8
    eval_batch_size: int = 64
    label_all_subwords: bool = False
    source_lang: str = ""
    target_langs: tuple[str, ...] = ()

    def __post_init__(self):
        _check(not self.target_langs or bool(self.source_lang),
               "--target_langs needs --source_lang (the language whose labels train)")
        _check(self.source_lang not in self.target_langs,
               f"--source_lang={self.source_lang} is also in --target_langs")
        _check(bool(self.train_files), "--train_file is empty: give at least one labelled file")
        _check(bool(self.dev_files), "--dev_file is empty: give a labelled dev file (model choice)")
        _check(bool(self.test_files), "--test_file is empty: give a labelled test file")
        _check(
            self.tag_scheme in TAG_SCHEMES,
            f"--tag_scheme={self.tag_scheme} is unknown; use one of {', '.join(TAG_SCHEMES)}",
        )
        _check(
            8 <= self.max_seq_length <= 4096,
            f"--max_seq_length={self.max_seq_length} must be between 8 and 4096",
        )
        _check(self.batch_size >= 1, "--batch_size must be at least 1")
        _check(self.eval_batch_size >= 1, "--eval_batch_size must be at least 1")


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
    """The teacher and how it is fine-tuned.

    Attributes:
        model: hub id or local folder of a Hugging Face TF-loadable encoder, or of a ready
            token-classification checkpoint (used as is, labels mapped to the data's).
        head: tagging head: softmax, crf, attention_softmax or attention_crf.
        learning_rate, epochs, warmup_ratio, weight_decay: AdamW with linear warm-up and decay.
        patience: epochs without dev F1 improvement before early stopping.
        reduce_lr_on_plateau: halve the learning rate when dev F1 does not improve for an epoch.
        freeze_encoder: train the head only.
        freeze_embeddings: keep the embeddings fixed (large multilingual vocabularies: AdamW
            otherwise updates the whole 250k-row table every step, and rare languages' rows drift).
        dropout: dropout before the classifier.
        fine_tune: "auto" fine-tunes unless the checkpoint is a ready token classifier;
            "yes" / "no" force it ("yes" on a ready one fine-tunes its own head and labels
            further, mapped from the data's as in distillation).
        new_head: a ready token classifier loses its head and labels: its encoder gets a new
            `head` for the data's labels and is fine-tuned (an encoder checkpoint: no change).
        aux_from_layer: 0 = no per-layer classifiers; n > 0 = a linear classifier on every
            encoder layer from n to the last-but-one, trained with the main loss.
        aux_weight: weight of the per-layer classifiers' loss.
        checkpoint: the `teacher/` folder of an earlier run with the same teacher, head and
            labels: its fine-tuned weights are loaded and fine-tuning is skipped.
        head_init: how a new head's classifier bias starts: "zero", or "prior" (the log
            frequency of each label in the training data, so fine-tuning does not spend its
            first steps learning that most tokens are O).
        o_weight: weight of O positions in the gold-label cross-entropy; below 1 makes
            predicting O everywhere a worse local optimum on O-heavy data. Softmax heads only:
            a CRF head scores whole tag sequences and ignores it.
    """

    model: str
    head: str = "softmax"
    learning_rate: float = 3e-4  # suits the 6x384 default; 3e-5..5e-5 for base-size teachers
    epochs: int = 3
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    patience: int = 2
    reduce_lr_on_plateau: bool = False
    freeze_encoder: bool = False
    freeze_embeddings: bool = True
    dropout: float = 0.1
    fine_tune: str = "auto"
    new_head: bool = False
    aux_from_layer: int = 0
    aux_weight: float = 0.1
    checkpoint: str = ""
    head_init: str = "prior"
    o_weight: float = 0.5

    def __post_init__(self):
        _check(bool(self.model), "--teacher is empty: give a hub id or a local model folder")
        _check(self.head in HEADS, f"--head={self.head} is unknown; use one of {', '.join(HEADS)}")
        _check(self.learning_rate > 0, "--teacher_learning_rate must be positive")
        _check(self.epochs >= 0, "--teacher_epochs must be >= 0")
        _check(0 <= self.warmup_ratio < 1, "--warmup_ratio must be in [0, 1)")
        _check(self.patience >= 1, "--patience must be >= 1")
        _check(0 <= self.dropout < 1, "--dropout must be in [0, 1)")
        _check(self.fine_tune in ("auto", "yes", "no"), "--teacher_fine_tune must be auto|yes|no")
        _check(not (self.new_head and self.fine_tune == "no"),
               "--teacher_new_head trains a new head: drop --teacher_fine_tune=no")
        _check(self.aux_from_layer >= 0, "--aux_from_layer must be >= 0 (0: none)")
        _check(self.aux_weight >= 0, "--aux_weight must be >= 0")
        _check(self.head_init in HEAD_INITS,
               f"--teacher_head_init={self.head_init}; use one of {', '.join(HEAD_INITS)}")
        _check(0 < self.o_weight <= 1, "--teacher_o_weight must be in (0, 1]")


@dataclasses.dataclass(frozen=True)
class StudentConfig:
    """The student and how its embeddings start.

    Attributes:
        model: hub id or folder; short name (`xtremedistil-l6-h256`); preset (`l4-h256`, random
            init); or `teacher:0,2,4` (those teacher layers, 0-based, copied).
        own_tokenizer: keep the student checkpoint's tokenizer instead of the teacher's; teacher
            and student are then compared on word-level vectors only.
        freeze_embeddings: keep the (compressed teacher) word embeddings fixed.
        dropout: dropout before the classifier.
        head: the student's tagging head (see `TeacherConfig.head`).
        copy_transitions: with CRF heads on both, start from the teacher's transition scores.
        embeddings: "teacher" (the teacher's word embeddings, SVD-compressed to the student's
            width) or "random" (the initialisation of the preset or checkpoint).
        init: how a preset student's weights start: "random" (random blocks; word embeddings
            as `embeddings` says) or "select" (weight selection from the fine-tuned teacher:
            evenly spaced layers, one subset of residual dimensions, whole heads and FFN
            neurons by measured importance; see `student_init`). A `teacher:i,j` cut has the
            teacher's embeddings and blocks either way; "select" also gives it the teacher's
            classifier (and an identity distillation projection), "random" a new one.
    """

    model: str = "teacher:0,2,4"
    own_tokenizer: bool = False
    freeze_embeddings: bool = True
    dropout: float = 0.1
    head: str = "softmax"
    copy_transitions: bool = True
    embeddings: str = "teacher"
    init: str = "random"

    def __post_init__(self):
        _check(self.init in ("random", "select"), "--student_init must be random or select")
        _check(self.init == "random" or self.embeddings == "teacher",
               "--student_init=select takes the embeddings from the teacher too; drop "
               "--student_embeddings=random")
        _check(self.init == "random" or not self.own_tokenizer,
               "--student_init=select reads the teacher's vocabulary; drop "
               "--student_own_tokenizer")
        _check(self.init == "random" or bool(PRESET.match(self.model) or CUT.match(self.model)),
               f"--student_init=select cuts a preset (l6-h256, l4-h256, ...) or teacher:i,j "
               f"student from the teacher, not --student={self.model}")
        _check(self.embeddings in ("teacher", "random"),
               "--student_embeddings must be teacher or random")
        _check(bool(self.model), "--student is empty: give a student name, preset or teacher:i,j")
        _check(self.head in HEADS,
               f"--student_head={self.head} is unknown; use one of {', '.join(HEADS)}")


@dataclasses.dataclass(frozen=True)
class DistilConfig:
    """The XtremeDistil stages.

    Attributes:
        stages: which of representations, logits, labels run, in that order; `auto`: logits
            and labels for a student cut from the teacher (`teacher:i,j`, whose blocks already
            are the teacher's), all three for any other (`stages.resolve_stages`).
        teacher_layer: teacher layer the student's representation learns: "middle", "last",
            "uniform" (every student layer mapped to a teacher layer), or an integer index
            (1 = first transformer block, as in Hugging Face `hidden_states`).
        logit_loss: "mse" on logits or "kl" with `temperature` (scaled by T^2).
        gradual_unfreezing: logits and labels stages unfreeze one block at a time from the top.
        freeze_bottom_blocks: the student's lowest N blocks (and its embeddings, below them)
            never train, in every stage: the published TSL setting freezes 3 of mBERT's 12,
            which keeps the multilingual alignment of the lower layers while the student
            adapts to target-language text.
        learning_rate, epochs, patience: per stage (or unfreezing step).
        msd_beta: MSD, weight of the per-layer distribution losses (x learnable mixing weights).
        mmd_weight: MSD, weight of each of the two MMD^2 losses on [CLS] vectors.
        mtmt_alpha: MTMT, weight of the similarity loss against the recogniser losses.
        target_temperature: TSL, MSD, MTMT: the student learns the teacher's distributions
            softmax(logits / T) on target text; T < 1 sharpens them toward the teacher's
            labels (self-training), 1 is the published setting.
        o_weight: weight of O positions in the labels stage's cross-entropy (softmax heads;
            CRF heads ignore it).
    """

    stages: tuple[str, ...] = ("auto",)
    teacher_layer: str = "middle"
    logit_loss: str = "kl"
    temperature: float = 2.0
    gradual_unfreezing: bool = False
    freeze_bottom_blocks: int = 0
    learning_rate: float = 2e-4
    epochs: int = 3
    patience: int = 1
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    msd_beta: float = 0.1
    mmd_weight: float = 1e-3
    mtmt_alpha: float = 1.0
    target_temperature: float = 1.0
    o_weight: float = 0.5

    def __post_init__(self):
        _check(0 < self.o_weight <= 1, "--o_weight must be in (0, 1]")
        _check(self.freeze_bottom_blocks >= 0, "--freeze_bottom_blocks must be >= 0")
        _check(self.msd_beta >= 0 and self.mmd_weight >= 0 and self.mtmt_alpha >= 0,
               "--msd_beta, --mmd_weight and --mtmt_alpha must be >= 0")
        if self.stages != ("auto",):
            for s in self.stages:
                _check(s in STAGE_NAMES,
                       f"--stages: unknown stage {s!r}; use auto or {','.join(STAGE_NAMES)}")
            _check(list(self.stages) == [s for s in STAGE_NAMES if s in self.stages],
                   f"--stages must keep the order {','.join(STAGE_NAMES)}")
        _check(
            self.teacher_layer in REP_LAYERS or self.teacher_layer.lstrip("-").isdigit(),
            f"--teacher_layer={self.teacher_layer} must be {'|'.join(REP_LAYERS)} or an integer",
        )
        _check(self.logit_loss in LOGIT_LOSSES, f"--logit_loss must be one of {LOGIT_LOSSES}")
        _check(self.temperature > 0, "--temperature must be positive")
        _check(self.target_temperature > 0, "--target_temperature must be positive")
        _check(self.learning_rate > 0, "--learning_rate must be positive")
        _check(self.epochs >= 1, "--epochs must be >= 1")
        _check(self.patience >= 1, "--patience must be >= 1")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one `run_distil.py` call does."""

    data: DataConfig
    teacher: TeacherConfig
    student: StudentConfig
    distil: DistilConfig
    output_dir: str = "runs/default"
    seed: int = 42
    strategy: str = "xtremedistil"
    export_dir: str = "saved_models"
    export_name: str = ""
    export_teacher: bool = False
    export_formats: tuple[str, ...] = ("savedmodel",)
    trim_vocab: bool = False
    speed_batch_size: int = 32
    speed_seq_length: int = 128
    xla: bool = False
    mixed_precision: str = "none"
    checkpoint_every: int = 200
    distribution: str = "default"
    tpu: str = ""
    cpu_devices: int = 0
    per_replica_batch_size: int = 0
    skip_nonfinite_batches: int = 0
    teacher_cache_dir: str = ""

    def __post_init__(self):
        _check(all(f in EXPORT_FORMATS for f in self.export_formats),
               f"--export_formats={','.join(self.export_formats)}: use a comma list of "
               f"{', '.join(EXPORT_FORMATS)}, or none")
        _check(bool(self.export_formats) or not (self.trim_vocab or self.export_teacher),
               "--export_formats=none exports nothing: drop --trim_vocab and --export_teacher")
        _check(self.skip_nonfinite_batches >= 0, "--skip_nonfinite_batches must be >= 0")
        _check(self.distribution in DISTRIBUTIONS,
               f"--distribution_strategy={self.distribution}; use one of "
               f"{', '.join(DISTRIBUTIONS)}")
        _check(self.mixed_precision in MIXED_PRECISION,
               f"--mixed_precision={self.mixed_precision}: use one of "
               f"{', '.join(MIXED_PRECISION)}")
        _check(self.per_replica_batch_size >= 0, "--per_replica_batch_size must be >= 0")
        _check(self.cpu_devices >= 0, "--cpu_devices must be >= 0")
        _check(bool(self.output_dir), "--output_dir is empty")
        _check(
            self.strategy in STRATEGIES,
            f"--strategy={self.strategy} is not available; use one of {', '.join(STRATEGIES)}",
        )
        _check(self.speed_batch_size >= 1, "--speed_batch_size must be >= 1")
        _check(self.checkpoint_every >= 0, "--checkpoint_every must be >= 0 (0: epoch ends only)")
        _check(self.strategy != "msd" or self.teacher.aux_from_layer > 0,
               "--strategy=msd needs a teacher with per-layer classifiers: add --aux_heads")
        if self.strategy != "xtremedistil":
            _check(bool(self.data.source_lang),
                   f"--strategy={self.strategy} distils on unlabelled target-language text: "
                   "give --source_lang (and --target_langs, default: every other language)")
            _check(self.teacher.head in SOFTMAX_HEADS and self.student.head in SOFTMAX_HEADS,
                   f"--strategy={self.strategy} learns token distributions: use softmax or "
                   "attention_softmax for --head and --student_head")
        _check(
            2 <= self.speed_seq_length <= self.data.max_seq_length,
            "--speed_seq_length must be between 2 and --max_seq_length",
        )


def _jsonable(value):
    return json.loads(json.dumps(dataclasses.asdict(value) if dataclasses.is_dataclass(value)
                                 else value))


# Where things are kept, not what is computed: a run may resume with another value.
NOT_SETTINGS = ("teacher_cache_dir",)

# Fields added after runs were saved without them, whose default is not what those runs did:
# the value that reproduces the older behaviour (the class handling of the default recipe).
BEFORE_FIELD = {"teacher.head_init": "zero", "teacher.o_weight": 1.0, "distil.o_weight": 1.0}


def setting_changes(previous: dict, cfg) -> list[str]:
    """How `cfg` differs from settings saved earlier (`dataclasses.asdict` of a config, as JSON).

    A field the saved settings lack (added by a newer version) counts only if `cfg` sets it to
    something else than what runs did before it existed (`BEFORE_FIELD`, else its default);
    fields the saved settings have but `cfg` lacks (removed) are ignored, and so are
    `NOT_SETTINGS`. Returns "path: old -> new" strings, empty when a
    run may resume.
    """
    changes = []

    def walk(saved: dict, obj, prefix: str):
        for field in dataclasses.fields(obj):
            value, name = getattr(obj, field.name), prefix + field.name
            if name in NOT_SETTINGS:
                continue
            if dataclasses.is_dataclass(value):
                walk(saved.get(field.name, {}), value, name + ".")
            elif field.name in saved:
                if saved[field.name] != _jsonable(value):
                    changes.append(f"{name}: {saved[field.name]} -> {_jsonable(value)}")
            elif field.default is not dataclasses.MISSING and value != BEFORE_FIELD.get(
                    name, field.default):
                changes.append(f"{name}: (unset) -> {_jsonable(value)}")

    walk(previous, cfg, "")
    return changes


def split_list(value: str) -> tuple[str, ...]:
    """Splits a comma-separated flag value into stripped, non-empty parts."""
    return _split(value)
