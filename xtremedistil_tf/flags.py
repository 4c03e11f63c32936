"""Every command-line flag of run_distil.py, and their conversion into config objects.

The central place to define flags: library code never reads FLAGS; entry points call
`configs_from_flags()` and hand the frozen configs on. Flagfiles in `flags/` layer on top of the
defaults here (`--flagfile=flags/smoke.cfg --train_file=X`: the later value wins).
"""

from __future__ import annotations

from absl import flags

from xtremedistil_tf import config as config_lib

FLAGS = flags.FLAGS

# Every default below is the config dataclass field's default (one set of defaults for the
# command line, `pipeline.run(RunConfig(...))`, the benchmark and resume's setting checks).
# A dataclass field with a plain default is also a class attribute holding that default.
_D, _T, _S, _X, _R = (config_lib.DataConfig, config_lib.TeacherConfig, config_lib.StudentConfig,
                      config_lib.DistilConfig, config_lib.RunConfig)

# Data.
flags.DEFINE_string("train_file", "", "Labelled training file(s), comma-separated; "
                    "'de=path' gives a plain file's sentences a language (per-language scores). "
                    "Empty: the embedded default (WNUT-2016 from PyPI).")
flags.DEFINE_string("dev_file", "", "Labelled dev file(s) for every model choice.")
flags.DEFINE_string("test_file", "", "Labelled test file(s), read only for the final report.")
flags.DEFINE_string("transfer_file", "", "Unlabelled text for distillation (one sentence per "
                    "line or CoNLL without tags), added to the training sentences.")
flags.DEFINE_enum("tag_scheme", _D.tag_scheme, list(config_lib.TAG_SCHEMES),
                  "Tag scheme of the labelled files; converted to IOB2.")
flags.DEFINE_integer("max_seq_length", _D.max_seq_length,
                     "Sub-words per window (special tokens included); "
                     "longer sentences are split into windows and merged back.")
flags.DEFINE_integer("batch_size", _D.batch_size, "Training batch size (windows).")
flags.DEFINE_integer("eval_batch_size", _D.eval_batch_size, "Evaluation batch size (windows).")
flags.DEFINE_bool("label_all_subwords", _D.label_all_subwords,
                  "Train on all sub-words, not only the first.")
flags.DEFINE_string("source_lang", _D.source_lang,
                    "Zero-shot protocol: the language whose labels train "
                    "(and whose dev sentences choose models).")
flags.DEFINE_list("target_langs", list(_D.target_langs),
                  "Zero-shot protocol: languages used without labels, "
                  "scored separately and on average.")
flags.DEFINE_string("cache_dir", "", "Where the embedded default is built (default "
                    "$XTREMEDISTIL_CACHE or ~/.cache/xtremedistil_tf).")

# Teacher.
flags.DEFINE_string("teacher", "", "Teacher: hub id or folder (tf_model.h5 or model.safetensors). "
                    "Empty: the embedded default all-MiniLM-L6-v2.")
flags.DEFINE_enum("head", _T.head, list(config_lib.HEADS), "Teacher tagging head: softmax, "
                  "crf, or self-attention + either.")
flags.DEFINE_enum("student_head", _S.head, list(config_lib.HEADS), "Student tagging head.")
flags.DEFINE_bool("copy_transitions", _S.copy_transitions,
                  "CRF teacher and student: the student starts from "
                  "the teacher's transition scores.")
flags.DEFINE_float("teacher_learning_rate", _T.learning_rate,
                   "Teacher fine-tuning peak learning rate "
                   "(3e-4 suits the 6x384 default; use 3e-5..5e-5 for base-size teachers).")
flags.DEFINE_integer("teacher_epochs", _T.epochs, "Teacher fine-tuning epochs at most.")
flags.DEFINE_integer("teacher_patience", _T.patience, "Teacher early stopping patience (epochs).")
flags.DEFINE_bool("reduce_lr_on_plateau", _T.reduce_lr_on_plateau,
                  "Halve the teacher's learning rate after an "
                  "epoch without dev improvement.")
flags.DEFINE_bool("freeze_encoder", _T.freeze_encoder, "Fine-tune the teacher's head only.")
flags.DEFINE_bool("teacher_freeze_embeddings", _T.freeze_embeddings,
                  "Fine-tune the teacher without its "
                  "embeddings (much faster with 250k-row multilingual vocabularies).")
flags.DEFINE_enum("teacher_fine_tune", _T.fine_tune, ["auto", "yes", "no"],
                  "auto: fine-tune unless the teacher is a ready token classifier; yes: also "
                  "fine-tune a ready one further (its own head and labels, which must cover "
                  "the data's types).")
flags.DEFINE_bool("teacher_new_head", _T.new_head, "A ready token classifier as teacher: keep "
                  "its encoder, drop its head and labels, and fine-tune a new --head on the "
                  "data's labels (like Hugging Face's ignore_mismatched_sizes). For data with "
                  "entity types the teacher lacks.")
flags.DEFINE_bool("aux_heads", False, "Per-layer classifiers on the teacher's layers from "
                  "--aux_from_layer to the last-but-one, trained with the main loss.")
flags.DEFINE_integer("aux_from_layer", config_lib.AUX_FROM_LAYER,
                     "First teacher layer (1-based block output) with a "
                     "per-layer classifier.")
flags.DEFINE_float("aux_weight", _T.aux_weight, "Weight of the per-layer classifiers' loss "
                   "(x sum of softmax(w)_i CE_i with learnable w).")
flags.DEFINE_string("teacher_checkpoint", _T.checkpoint,
                    "The teacher/ folder of an earlier run (same "
                    "--teacher, --head and labels): reuse its fine-tuned weights, skip "
                    "fine-tuning. For many students of one teacher.")
flags.DEFINE_enum("teacher_head_init", _T.head_init, list(config_lib.HEAD_INITS),
                  "How the teacher's new head starts: zero bias, or prior (log label "
                  "frequencies of the training data).")
flags.DEFINE_float("teacher_o_weight", _T.o_weight, "Weight of O positions in the teacher's "
                   "cross-entropy (< 1 against the all-O start on O-heavy data; CRF heads "
                   "ignore it).")
flags.DEFINE_float("dropout", _T.dropout, "Dropout before the classifiers.")
flags.DEFINE_float("warmup_ratio", _T.warmup_ratio, "Share of each stage's steps used for warm-up.")
flags.DEFINE_float("weight_decay", _T.weight_decay,
                   "AdamW weight decay (not on LayerNorm and biases).")

# Student and distillation.
flags.DEFINE_string("student", _S.model, "Student: hub id or folder, short name "
                    "(xtremedistil-l6-h256, -l6-h384, -l12-h384), preset (l4-h256) or "
                    "teacher:i,j,... (teacher layers, 0-based).")
flags.DEFINE_bool("student_own_tokenizer", _S.own_tokenizer,
                  "Keep the student's own tokenizer; losses are "
                  "then computed on word-level vectors.")
flags.DEFINE_bool("freeze_embeddings", _S.freeze_embeddings,
                  "Do not train the student's word embeddings.")
flags.DEFINE_enum("student_init", _S.init, ["random", "select"], "How a preset student "
                  "starts: random blocks, or weight selection from the fine-tuned teacher "
                  "(evenly spaced layers, residual dimensions by variance, heads and FFN "
                  "neurons by importance; the teacher's head size is kept). A teacher:i,j "
                  "student: a new classifier (random), or the teacher's (select).")
flags.DEFINE_enum("student_embeddings", _S.embeddings, ["teacher", "random"], "Student word "
                  "embeddings: the teacher's, SVD-compressed to the student's width, or random.")
flags.DEFINE_enum("strategy", _R.strategy, list(config_lib.STRATEGIES),
                  "Distillation strategy: xtremedistil (staged), tsl (Wu et al. 2020), msd "
                  "(Ma et al. 2022; needs --aux_heads) or mtmt (Li et al. 2022).")
flags.DEFINE_float("msd_beta", _X.msd_beta, "MSD: weight of the per-layer distribution losses.")
flags.DEFINE_float("mmd_weight", _X.mmd_weight, "MSD: weight of each MMD^2 loss on [CLS] vectors.")
flags.DEFINE_float("mtmt_alpha", _X.mtmt_alpha, "MTMT: weight of the similarity loss.")
flags.DEFINE_float("target_temperature", _X.target_temperature,
                   "TSL, MSD, MTMT: the student learns softmax(teacher logits / T) on target "
                   "text; T < 1 sharpens it toward the teacher's labels, 1 as published.")
flags.DEFINE_list("stages", list(_X.stages), "Student stages, in order, of "
                  "representations,logits,labels; auto: logits,labels for a teacher:i,j "
                  "student, all three for others.")
flags.DEFINE_string("teacher_layer", _X.teacher_layer,
                    "Teacher layer for the representation stage: "
                    "middle, last, uniform or an index into hidden_states.")
flags.DEFINE_enum("logit_loss", _X.logit_loss, list(config_lib.LOGIT_LOSSES), "Logit loss.")
flags.DEFINE_float("temperature", _X.temperature, "Temperature of the kl logit loss.")
flags.DEFINE_bool("gradual_unfreezing", _X.gradual_unfreezing,
                  "Unfreeze one block at a time from the top in "
                  "the logits and labels stages.")
flags.DEFINE_integer("freeze_bottom_blocks", _X.freeze_bottom_blocks,
                     "The student's lowest N blocks (and its embeddings) never train.")
flags.DEFINE_float("learning_rate", _X.learning_rate, "Student peak learning rate per stage.")
flags.DEFINE_integer("epochs", _X.epochs, "Student epochs per stage (or unfreezing step) at most.")
flags.DEFINE_integer("patience", _X.patience, "Student early stopping patience (epochs).")
flags.DEFINE_float("o_weight", _X.o_weight, "Weight of O positions in the student's labels "
                   "stage cross-entropy (CRF heads ignore it).")

# Run.
flags.DEFINE_string("output_dir", _R.output_dir, "Where the run writes everything; rerunning "
                    "the same command resumes there.")
flags.DEFINE_integer("seed", _R.seed, "Random seed (data order, initialisation, dropout).")
flags.DEFINE_string("export_dir", _R.export_dir, "Base folder of SavedModel exports.")
flags.DEFINE_string("export_name", _R.export_name, "Export name (default: the output_dir's name).")
flags.DEFINE_bool("export_teacher", _R.export_teacher, "Also export the teacher.")
flags.DEFINE_list("export_formats", list(_R.export_formats), "Export formats, comma list: "
                  "savedmodel (<export_dir>/<name>/), litert (<name>-litert/: model.tflite "
                  "for CPU processes and edge devices), litert_int8 (<name>-litert-int8/); "
                  "none: no export (sweeps, experiments).")
flags.DEFINE_bool("trim_vocab", _R.trim_vocab, "Export the student with only the sub-words of "
                  "the training and transfer text (+ special tokens): a much smaller embedding "
                  "table and tokenizer; covered text is tagged the same (see vocab_trim.py).")
flags.DEFINE_integer("speed_batch_size", _R.speed_batch_size,
                     "Batch size of the speed measurement.")
flags.DEFINE_integer("speed_seq_length", _R.speed_seq_length,
                     "Sequence length of the speed measurement.")
flags.DEFINE_integer("checkpoint_every", _R.checkpoint_every,
                     "Training steps between resume checkpoints "
                     "(also written at every epoch end; 0: epoch ends only).")
flags.DEFINE_string("teacher_cache_dir", _R.teacher_cache_dir,
                    "Folder for the teacher's outputs on the transfer text, shared between runs: "
                    "a run whose teacher weights, tokenizer, text and cached layers match an "
                    "earlier one's reuses them instead of running the teacher again (empty: "
                    "inside --output_dir, deleted when the run ends).")
flags.DEFINE_integer("skip_nonfinite_batches", _R.skip_nonfinite_batches,
                     "0: a NaN/Inf loss stops the stage (the last "
                     "checkpoint is kept). N > 0: skip such batches (no update), halve the "
                     "learning rate each time, stop after N in a stage.")
flags.DEFINE_bool("xla", _R.xla, "Compile with XLA (helps on GPUs; slower on CPUs).")
flags.DEFINE_enum("mixed_precision", _R.mixed_precision, list(config_lib.MIXED_PRECISION),
                  "Train in mixed precision: bfloat16 (CPUs with AVX512_BF16 or AMX, recent "
                  "GPUs) or float16 (GPUs, with loss scaling); float32 variables, and the "
                  "reported scores and speeds are of float32 rebuilds. none: float32.")
flags.DEFINE_enum("distribution_strategy", _R.distribution, list(config_lib.DISTRIBUTIONS),
                  "tf.distribute for training: default (one device), mirrored (all local GPUs, "
                  "or --cpu_devices), multi_worker (hosts from TF_CONFIG) or tpu (--tpu).")
flags.DEFINE_string("tpu", _R.tpu, "TPU name or grpc:// address for --distribution_strategy=tpu.")
flags.DEFINE_integer("cpu_devices", _R.cpu_devices,
                     "mirrored without GPUs: split the CPU into this many "
                     "logical devices (to try multi-replica training on a CPU).")
flags.DEFINE_integer("per_replica_batch_size", _R.per_replica_batch_size,
                     "If > 0: the global --batch_size becomes this "
                     "times the number of replicas. --batch_size is always the global batch.")


def _files(value: str) -> tuple[str, ...]:
    return config_lib.split_list(value)


def configs_from_flags(default_assets=None, flag_values=None) -> config_lib.RunConfig:
    """Builds the run's configs from parsed flags.

    Args:
        default_assets: `default_data.DefaultAssets` filling in files and teacher left empty.
        flag_values: parsed `absl.flags.FlagValues` holding this module's flags (default: FLAGS),
            e.g. a copy parsed for one point of a sweep.
    """
    f = FLAGS if flag_values is None else flag_values
    d = default_assets
    data = config_lib.DataConfig(
        train_files=_files(f.train_file or (d.train_file if d else "")),
        dev_files=_files(f.dev_file or (d.dev_file if d else "")),
        test_files=_files(f.test_file or (d.test_file if d else "")),
        transfer_files=_files(f.transfer_file),
        tag_scheme=f.tag_scheme,
        max_seq_length=f.max_seq_length,
        batch_size=f.batch_size,
        eval_batch_size=f.eval_batch_size,
        label_all_subwords=f.label_all_subwords,
        source_lang=f.source_lang,
        target_langs=tuple(f.target_langs),
    )
    teacher = config_lib.TeacherConfig(
        model=f.teacher or (d.teacher_dir if d else ""),
        head=f.head,
        learning_rate=f.teacher_learning_rate,
        epochs=f.teacher_epochs,
        warmup_ratio=f.warmup_ratio,
        weight_decay=f.weight_decay,
        patience=f.teacher_patience,
        reduce_lr_on_plateau=f.reduce_lr_on_plateau,
        freeze_encoder=f.freeze_encoder,
        freeze_embeddings=f.teacher_freeze_embeddings,
        dropout=f.dropout,
        fine_tune=f.teacher_fine_tune,
        new_head=f.teacher_new_head,
        aux_from_layer=f.aux_from_layer if f.aux_heads else 0,
        aux_weight=f.aux_weight,
        checkpoint=f.teacher_checkpoint,
        head_init=f.teacher_head_init,
        o_weight=f.teacher_o_weight,
    )
    student = config_lib.StudentConfig(
        model=f.student,
        own_tokenizer=f.student_own_tokenizer,
        freeze_embeddings=f.freeze_embeddings,
        dropout=f.dropout,
        head=f.student_head,
        copy_transitions=f.copy_transitions,
        embeddings=f.student_embeddings,
        init=f.student_init,
    )
    distil = config_lib.DistilConfig(
        stages=tuple(f.stages),
        teacher_layer=f.teacher_layer,
        logit_loss=f.logit_loss,
        temperature=f.temperature,
        gradual_unfreezing=f.gradual_unfreezing,
        freeze_bottom_blocks=f.freeze_bottom_blocks,
        learning_rate=f.learning_rate,
        epochs=f.epochs,
        patience=f.patience,
        warmup_ratio=f.warmup_ratio,
        weight_decay=f.weight_decay,
        msd_beta=f.msd_beta,
        mmd_weight=f.mmd_weight,
        mtmt_alpha=f.mtmt_alpha,
        target_temperature=f.target_temperature,
        o_weight=f.o_weight,
    )
    return config_lib.RunConfig(
        data=data,
        teacher=teacher,
        student=student,
        distil=distil,
        output_dir=f.output_dir,
        seed=f.seed,
        strategy=f.strategy,
        export_dir=f.export_dir,
        export_name=f.export_name,
        export_teacher=f.export_teacher,
        export_formats=() if f.export_formats == ["none"] else tuple(f.export_formats),
        trim_vocab=f.trim_vocab,
        speed_batch_size=f.speed_batch_size,
        speed_seq_length=f.speed_seq_length,
        xla=f.xla,
        mixed_precision=f.mixed_precision,
        distribution=f.distribution_strategy,
        tpu=f.tpu,
        cpu_devices=f.cpu_devices,
        per_replica_batch_size=f.per_replica_batch_size,
        skip_nonfinite_batches=f.skip_nonfinite_batches,
        checkpoint_every=f.checkpoint_every,
        teacher_cache_dir=f.teacher_cache_dir,
    )


def needs_default_assets(flag_values=None) -> bool:
    """True when the embedded default must fill in data files or the teacher."""
    f = FLAGS if flag_values is None else flag_values
    return not (f.train_file and f.dev_file and f.test_file and f.teacher)


def resolved_flags() -> str:
    """The flags of this module with their values, as a flagfile."""
    return FLAGS.flags_into_string()
