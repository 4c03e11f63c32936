"""The whole job: data → teacher → staged student → evaluation → SavedModel.

`run(config)` is what `run_distil.py` calls. Each finished step (teacher fine-tuning, every student
stage, the export) is recorded in `<output_dir>/state.json` next to its checkpoint, so rerunning
the same command after an interruption continues after the last finished step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import sys
import time

import numpy as np
import tensorflow as tf

from xtremedistil_tf import (
    config as config_lib,
    data as data_lib,
    distribute as distribute_lib,
    evaluate,
    export as export_lib,
    features,
    inference,
    labels as labels_lib,
    models,
    objectives,
    report,
    run_data,
    run_state,
    savedmodel,
    speed,
    stages as stages_lib,
    teacher_cache,
    train,
    vocab_trim,
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclasses.dataclass
class Split:
    """Sentences of one split tokenized for one model."""

    sentences: list[data_lib.Sentence]
    windows: list[features.Window]

    @property
    def lengths(self) -> list[int]:
        return [len(s.words) for s in self.sentences]


def teacher_label_ids(teacher_labels: list[str], labels: list[str]) -> dict[str, int]:
    """Data label -> the id the teacher learns it as: its own index, or for a ready teacher
    with other label names, the index of the teacher label that feeds it
    (`labels.map_teacher_labels`: B-PER and I-PER both become an IO teacher's PER)."""
    if teacher_labels == labels:
        return {label: i for i, label in enumerate(labels)}
    mapping = labels_lib.map_teacher_labels(teacher_labels, labels)
    return {label: int(k) for label, k in zip(labels, mapping, strict=True)}


def tokenize(sentences, tokenizer, label_ids, cfg: config_lib.DataConfig) -> Split:
    return Split(sentences, features.make_windows(
        sentences, tokenizer, label_ids, cfg.max_seq_length))


# --------------------------------------------------------------------------- models at work


class Tagger:
    """A model with its tokenizer and a compiled word-level forward pass."""

    def __init__(self, model, tokenizer, cfg: config_lib.DataConfig, labels, convert=None,
                 hidden_layers=(), xla=False, with_aux=False):
        self.model = model
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.labels = labels
        self.convert = convert  # teacher label space -> data label space (ready teachers)
        self.forward = inference.make_forward(model, hidden_layers, xla, with_aux=with_aux)

    def batches(self, split: Split, word_targets=None):
        return features.make_batches(split.windows, self.cfg.eval_batch_size,
                                     self.cfg.max_seq_length, self.tokenizer.pad_token_id,
                                     word_targets)

    def outputs(self, split: Split) -> dict[str, list[np.ndarray]]:
        return inference.sentence_outputs(self.forward, split.windows, self.batches(split),
                                          split.lengths)

    def probabilities(self, logits: list[np.ndarray]) -> list[np.ndarray]:
        probs = [inference.softmax(x) for x in logits]
        return [self.convert(p) for p in probs] if self.convert else probs

    def predict(self, split: Split) -> list[list[str]]:
        out = self.outputs(split)
        if self.convert:  # a ready teacher's own labels, mapped to the data's
            ids = [p.argmax(axis=-1) for p in self.probabilities(out["logits"])]
        else:
            ids = out["label_ids"]
        return [[self.labels[i] for i in row] for row in ids]

    def score(self, split: Split) -> dict:
        gold = [list(s.tags) for s in split.sentences]
        langs = [s.lang for s in split.sentences]
        return evaluate.score_tags(gold, self.predict(split), langs)


def teacher_targets(tagger: Tagger, split: Split) -> dict[str, list[np.ndarray]]:
    """Per-sentence word-level teacher outputs: `teacher_logits` [n, K], `teacher_hidden`
    [n, layers, H] and `teacher_aux_logits` [n, n_aux, K] (per-layer classifiers)."""
    out = tagger.outputs(split)
    logits = out["logits"]
    if tagger.convert:  # a ready teacher speaks its own labels: learn its mapped distribution
        logits = [np.log(np.maximum(p, 1e-8)) for p in tagger.probabilities(logits)]
    targets = {"teacher_logits": [x.astype(np.float32) for x in logits]}
    if "hidden" in out:  # float16 halves the cache; losses compute in float32
        targets["teacher_hidden"] = [h.astype(np.float16) for h in out["hidden"]]
    if "aux_logits" in out:
        targets["teacher_aux_logits"] = [x.astype(np.float32) for x in out["aux_logits"]]
    return targets


def window_targets(targets: dict, windows: list[features.Window]) -> dict:
    """Slices per-sentence word targets into the student's windows."""
    return {k: [v[w.sentence][w.word_start:w.word_end] for w in windows]
            for k, v in targets.items()}


def cached_teacher_targets(tagger: Tagger, sentences, dcfg, folder: str | None,
                           chunk: int = teacher_cache.CACHE_CHUNK) -> dict[str, list[np.ndarray]]:
    """`teacher_targets` of `sentences`, all in memory, computed chunk by chunk and kept under
    `folder` (see `teacher_cache.TeacherCache`): a crash after hours of teacher inference loses
    at most one chunk. Large sets stream instead (`_transfer_cache`)."""
    if not folder:
        return teacher_targets(tagger, tokenize(sentences, tagger.tokenizer, None, dcfg))
    return teacher_cache.TeacherCache.build(_teacher_compute(tagger, dcfg), sentences, folder,
                                            chunk).load_all()


def _teacher_compute(tagger: Tagger, dcfg):
    def compute(part):
        return teacher_targets(tagger, tokenize(part, tagger.tokenizer, None, dcfg))
    return compute


def _teacher_cache(tagger: Tagger, sentences, s_tok, dcfg, folder: str | None = None
                   ) -> tuple[Split, dict]:
    """The student's split of unlabelled `sentences` and the teacher's word targets for it,
    in memory (kept in chunks under `folder`, see `cached_teacher_targets`)."""
    s_split = tokenize(sentences, s_tok, None, dcfg)
    targets = cached_teacher_targets(tagger, sentences, dcfg, folder)
    return s_split, window_targets(targets, s_split.windows)


def _transfer_cache(tagger: Tagger, sentences, s_tok, dcfg, folder: str
                    ) -> tuple[Split, teacher_cache.TeacherCache]:
    """The student's split of the transfer sentences and the teacher's targets on disk,
    streamed into training a few chunks at a time (memory does not grow with the set)."""
    s_split = tokenize(sentences, s_tok, None, dcfg)
    cache = teacher_cache.TeacherCache.build(_teacher_compute(tagger, dcfg), sentences, folder,
                                             log=log)
    return s_split, cache


def _sentence_cls(model, split: Split, tokenizer, dcfg) -> list[np.ndarray]:
    """The model's last-layer [CLS] vector of each sentence (of its first window), float32."""
    batches = features.make_batches(split.windows, dcfg.eval_batch_size, dcfg.max_seq_length,
                                    tokenizer.pad_token_id)
    cls = inference.make_cls(model)
    per_sentence: list = [None] * len(split.sentences)
    for batch in batches:
        vectors = cls(batch["input_ids"], batch["attention_mask"]).numpy()
        for row, w in enumerate(batch["window"]):
            sentence = split.windows[w].sentence
            if per_sentence[sentence] is None or split.windows[w].word_start == 0:
                per_sentence[sentence] = vectors[row]
    return per_sentence


def _similarity_teacher(cfg, state, labels, t_tok, t_splits, history):
    """MTMT's similarity teacher: the teacher checkpoint fine-tuned on source word pairs."""
    model, _, _ = models.build_teacher(cfg.teacher.model, labels, cfg.teacher.dropout)
    folder = os.path.join(cfg.output_dir, "similarity_teacher")
    if state.done("similarity_teacher"):
        models.load_weights(model, folder)
        history += state.done("similarity_teacher")["history"]
        log("similarity teacher: fine-tuned in an earlier run, weights loaded")
        return model
    log("similarity teacher: fine-tuning on source word pairs (same entity type or not)")
    settings = objectives.LossSettings(label_types=labels_lib.label_types(labels))
    tagger = Tagger(model, t_tok, cfg.data, labels)
    result = _run_stage(model, stages_lib.similarity_stage(cfg.teacher, model.num_blocks),
                        t_splits, tagger, cfg, settings,
                        dataclasses.replace(teacher_loop(cfg), reduce_lr_on_plateau=False),
                        log_name="similarity_teacher")
    _finish_stage(cfg, state, "similarity_teacher", "similarity_teacher", model, folder, result,
                  labels, t_tok)
    history += result.history
    return model


# --------------------------------------------------------------------------- the run


def run(cfg: config_lib.RunConfig) -> dict:
    """Runs the job described by `cfg` and returns the metrics document (also on disk).

    Under `--distribution_strategy` every model is built in the strategy's scope and every
    training stage runs on all replicas; a non-chief worker runs the same steps (collective ops
    need it) but writes into `<output_dir>/.worker<i>`, so only the chief's files are results.
    """
    strategy = distribute_lib.make_strategy(cfg.distribution, cfg.tpu, cfg.cpu_devices)
    settings = cfg  # what a resumed run must match (before per-worker changes)
    if not distribute_lib.is_chief(strategy):
        scratch = distribute_lib.worker_folder(strategy, cfg.output_dir)
        cfg = dataclasses.replace(cfg, output_dir=scratch,
                                  export_dir=os.path.join(scratch, "saved_models"))
    if cfg.per_replica_batch_size:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(
            cfg.data, batch_size=cfg.per_replica_batch_size * distribute_lib.replicas(strategy)))
    if strategy is not None:
        log(f"distribution: {distribute_lib.describe(strategy)}; global batch "
            f"{cfg.data.batch_size} ({cfg.data.batch_size / strategy.num_replicas_in_sync:g} "
            "per replica)")
    with strategy.scope() if strategy else contextlib.nullcontext():
        return _run(cfg, settings)


def _check_plan(cfg: config_lib.RunConfig, teacher) -> None:
    """Fails now for settings that would only fail after the teacher's fine-tuning.

    The sequence length must fit both models' position embeddings, the student must be buildable
    (`models.check_student`) and its representation layer pairing must exist. An MSD student
    without layers to pair with the teacher's per-layer classifiers gets a warning.
    """
    length = cfg.data.max_seq_length
    teacher_positions = models.max_positions(teacher.encoder.config)
    if length > teacher_positions:
        raise ValueError(f"--max_seq_length={length} is longer than the {teacher_positions} "
                         f"positions of teacher {cfg.teacher.model}; lower --max_seq_length")
    blocks = models.check_student(cfg.student.model, teacher, length, cfg.student.init)
    stages_lib.representation_pairs(cfg.distil.teacher_layer, teacher.num_blocks, blocks)
    if cfg.strategy == "msd" and not stages_lib.msd_layer_pairs(
            teacher.aux_layers, teacher.num_blocks, blocks)[0]:
        log(f"warning: --strategy=msd: no layer of the {blocks}-block student pairs with a "
            f"teacher layer that has a classifier ({list(teacher.aux_layers)}), so only the "
            "output distributions and MMD terms are distilled; use a deeper student for "
            "per-layer channels")


def _run(cfg: config_lib.RunConfig, settings: config_lib.RunConfig) -> dict:
    t_start = time.time()
    out = cfg.output_dir
    os.makedirs(out, exist_ok=True)
    tf.keras.utils.set_random_seed(cfg.seed)
    state = run_state.RunState(out, settings)
    dcfg = cfg.data

    loaded = run_data.load_data(dcfg)
    splits, labels, unlabelled, dcfg = (loaded.splits, loaded.labels, loaded.unlabelled,
                                        loaded.config)
    cfg = dataclasses.replace(cfg, data=dcfg)
    label_ids = {label: i for i, label in enumerate(labels)}
    log(f"data: {', '.join(f'{k} {len(v)} sentences' for k, v in splits.items())}, "
        f"transfer {len(unlabelled['transfer'])}; {len(labels)} labels")

    # Teacher.
    t_tok = models.load_tokenizer(cfg.teacher.model)
    teacher, teacher_labels, ready = models.build_teacher(
        cfg.teacher.model, labels, cfg.teacher.dropout, cfg.teacher.head, t_tok.all_special_ids,
        cfg.teacher.aux_from_layer, new_head=cfg.teacher.new_head)
    convert = None
    if teacher_labels != labels:
        labels_lib.map_teacher_labels(teacher_labels, labels)  # fails early if unmappable
        def convert(p):
            return labels_lib.teacher_probs_to_data(p, teacher_labels, labels)
    # A ready teacher fine-tuned further learns gold tags in its own label space.
    t_label_ids = teacher_label_ids(teacher_labels, labels)
    t_splits = {k: tokenize(v, t_tok, t_label_ids, dcfg) for k, v in splits.items()}
    _check_plan(cfg, teacher)  # before any fine-tuning
    fine_tune = cfg.teacher.fine_tune == "yes" or (cfg.teacher.fine_tune == "auto" and not ready)
    if ready and fine_tune:
        log(f"teacher: fine-tuning the ready token classifier further with its own labels "
            f"({' '.join(teacher_labels)}; the data's tags mapped to them)")
    t_tagger = Tagger(teacher, t_tok, dcfg, labels, convert, xla=cfg.xla)
    history = []
    teacher_dir = os.path.join(out, "teacher")
    if cfg.teacher.checkpoint:  # fine-tuned by an earlier run: reuse, never retrain
        models.check_compatible(teacher, cfg.teacher.checkpoint, teacher_labels)
        models.load_weights(teacher, cfg.teacher.checkpoint)
        log(f"teacher: fine-tuned weights loaded from {cfg.teacher.checkpoint}")
    elif fine_tune and state.done("teacher"):
        models.load_weights(teacher, teacher_dir)
        history += state.done("teacher")["history"]
        log("teacher: fine-tuned in an earlier run, weights loaded")
    elif fine_tune and cfg.teacher.epochs > 0:
        stage = stages_lib.teacher_stage(cfg.teacher, teacher.num_blocks,
                                         aux=bool(teacher.aux_layers))
        log(f"teacher: fine-tuning {cfg.teacher.model} ({teacher.num_blocks} blocks)")
        result = _run_stage(teacher, stage, t_splits, t_tagger, cfg,
                            objectives.LossSettings(label_all_subwords=dcfg.label_all_subwords,
                                               aux_weight=cfg.teacher.aux_weight),
                            teacher_loop(cfg))
        _finish_stage(cfg, state, "teacher", "teacher", teacher, teacher_dir, result,
                      teacher_labels, t_tok)
        history += result.history
    if not os.path.exists(teacher_dir):
        models.save_weights(teacher, teacher_dir, teacher_labels, t_tok)

    # Student.
    s_tok = (models.load_tokenizer(models.resolve_student_name(cfg.student.model))
             if cfg.student.own_tokenizer else t_tok)
    student = models.build_student(
        cfg.student.model, teacher, len(labels), len(t_tok), t_tok.pad_token_id,
        dcfg.max_seq_length, cfg.student.dropout, cfg.student.own_tokenizer,
        cfg.student.head, labels, s_tok.all_special_ids, cfg.student.embeddings,
        msd=cfg.strategy == "msd", init=cfg.student.init,
        select_batches=(_select_sample(unlabelled["transfer"], t_tok, dcfg, cfg.seed)
                        if cfg.student.init == "select" else None))
    if cfg.student.init == "select":
        sel = student.selection
        log(f"student: weight selection from the teacher: blocks {sel.layers}, "
            f"{len(sel.dims)} of {teacher.hidden_size} residual dimensions, "
            f"{len(sel.heads[0])} heads and {len(sel.neurons[0])} FFN neurons per block")
    msd_pairs = (stages_lib.msd_layer_pairs(teacher.aux_layers, teacher.num_blocks,
                                            student.num_blocks)
                 if cfg.strategy == "msd" else None)
    if cfg.student.copy_transitions and student.head.crf and teacher.head.crf and not ready:
        for mine, theirs in zip(student.head.crf.weights, teacher.head.crf.weights, strict=True):
            mine.assign(theirs)
    t_layers, s_layers = stages_lib.representation_pairs(
        cfg.distil.teacher_layer, teacher.num_blocks, student.num_blocks)
    settings = objectives.LossSettings(
        s_layers, cfg.distil.logit_loss, cfg.distil.temperature, dcfg.label_all_subwords,
        aux_targets=msd_pairs[1] if msd_pairs else (), msd_beta=cfg.distil.msd_beta,
        mmd_weight=cfg.distil.mmd_weight, mtmt_alpha=cfg.distil.mtmt_alpha)
    s_splits = (t_splits if s_tok is t_tok and t_label_ids == label_ids
                else {k: tokenize(v, s_tok, label_ids, dcfg) for k, v in splits.items()})
    s_tagger = Tagger(student, s_tok, dcfg, labels, xla=cfg.xla)
    schedule = stages_lib.build_schedule(cfg.distil, student.num_blocks,
                                         cfg.student.freeze_embeddings, cfg.strategy,
                                         aux=bool(student.aux_layers))
    log(f"student: {cfg.student.model} ({student.num_blocks} blocks, width "
        f"{student.hidden_size}); strategy {cfg.strategy}; stages: "
        f"{', '.join(s.name for s in schedule)}")

    student_dir = os.path.join(out, "student")
    todo = [s for s in schedule if not state.done(s.name)]
    if len(todo) < len(schedule):
        models.load_weights(student, student_dir)
        for s in schedule:
            if state.done(s.name):
                history += state.done(s.name)["history"]
        log(f"student: {len(schedule) - len(todo)} stages finished in an earlier run, resuming")
    targets = {}
    if any(s.data == "transfer" for s in todo):
        cached_layers = t_layers if any(s.objective == "representations" for s in todo) else ()
        log(f"caching teacher outputs (logits, hidden states {list(cached_layers)}) on transfer "
            "and dev data")
        cache_tagger = Tagger(teacher, t_tok, dcfg, labels, convert, hidden_layers=cached_layers)
        s_splits["transfer"], targets["transfer"] = _transfer_cache(
            cache_tagger, unlabelled["transfer"], s_tok, dcfg,
            _cache_dir(cfg, "transfer", cached_layers))
        targets["dev"] = window_targets(teacher_targets(cache_tagger, t_splits["dev"]),
                                        s_splits["dev"].windows)
    if any(s.data == "target" for s in todo):
        log(f"caching teacher outputs on {len(unlabelled['target'])} target-language sentences")
        cache_tagger = Tagger(teacher, t_tok, dcfg, labels, convert,
                              with_aux=cfg.strategy == "msd")
        s_splits["target"], targets["target"] = _teacher_cache(
            cache_tagger, unlabelled["target"], s_tok, dcfg,
            _cache_dir(cfg, "target", aux=cfg.strategy == "msd"))
        if cfg.strategy == "mtmt":
            similar = _similarity_teacher(cfg, state, labels, t_tok, t_splits, history)
            sim_tagger = Tagger(similar, t_tok, dcfg, labels, hidden_layers=(similar.num_blocks,))
            _, sim = _teacher_cache(sim_tagger, unlabelled["target"], s_tok, dcfg,
                                    _cache_dir(cfg, "similarity", (similar.num_blocks,)))
            targets["target"]["teacher_sim"] = [h[:, 0] for h in sim["teacher_hidden"]]
        if cfg.strategy == "msd":
            source = tokenize(unlabelled["source"], t_tok, None, dcfg)
            s_splits["source"] = (source if s_tok is t_tok
                                  else tokenize(unlabelled["source"], s_tok, None, dcfg))
            targets["source_cls"] = _sentence_cls(teacher, source, t_tok, dcfg)
    best_f1 = max([state.done(s.name)["best"] for s in schedule
                   if s.monitor == "dev_f1" and state.done(s.name)], default=-math.inf)
    for stage in todo:
        # F1 stages must beat the best dev F1 so far: the final student is the best one seen.
        baseline = best_f1 if stage.monitor == "dev_f1" else -math.inf
        log_name = f"student_{stage.name.replace('/', '_')}"
        result = _run_stage(student, stage, s_splits, s_tagger, cfg, settings, student_loop(cfg),
                            targets=targets, log_name=log_name, baseline=baseline)
        if stage.monitor == "dev_f1":
            best_f1 = max(best_f1, result.best)
        _finish_stage(cfg, state, stage.name, log_name, student, student_dir, result, labels,
                      s_tok)
        history += result.history
    shutil.rmtree(os.path.join(out, "teacher_cache"), ignore_errors=True)  # every stage is done

    # Evaluation on test: the only place test labels are read.
    log("evaluating teacher and student on test")
    doc = _evaluate(cfg, t_tagger, s_tagger, t_splits, s_splits, teacher_dir, student_dir)
    if history:
        report.write_json(os.path.join(out, "history.json"), history)
        report.plot_history(history, os.path.join(out, "curves.png"))
    doc["data"] = {**{k: len(v) for k, v in splits.items()},
                   **{k: len(v) for k, v in unlabelled.items()}}
    doc["export"] = _export(cfg, state, student, teacher, labels, teacher_labels, s_tok, t_tok,
                            unlabelled["transfer"])
    if "trimmed_vocab" in doc["export"]:
        doc["student"]["trimmed_vocab"] = doc["export"].pop("trimmed_vocab")
    doc["wall_seconds"] = time.time() - t_start
    doc["peak_rss_mb"] = train.peak_rss_mb()  # of this process (a resumed run: since it resumed)
    report.write_json(os.path.join(out, "metrics.json"), doc)
    return doc


def student_loop(cfg: config_lib.RunConfig) -> train.LoopConfig:
    """How every distillation stage's loop runs (`train.LoopConfig`)."""
    return train.LoopConfig(
        weight_decay=cfg.distil.weight_decay, warmup_ratio=cfg.distil.warmup_ratio, xla=cfg.xla,
        checkpoint_every=cfg.checkpoint_every, skip_nonfinite=cfg.skip_nonfinite_batches,
        seed=cfg.seed,
        strategy=tf.distribute.get_strategy() if tf.distribute.has_strategy() else None)


def teacher_loop(cfg: config_lib.RunConfig) -> train.LoopConfig:
    """The teacher's fine-tuning loop: the student's, with the teacher's optimizer settings."""
    return dataclasses.replace(student_loop(cfg), weight_decay=cfg.teacher.weight_decay,
                               warmup_ratio=cfg.teacher.warmup_ratio,
                               reduce_lr_on_plateau=cfg.teacher.reduce_lr_on_plateau)


def _run_stage(model, stage, splits, tagger: Tagger, cfg, settings, loop: train.LoopConfig,
               targets=None, log_name="teacher", baseline=-math.inf):
    dcfg = cfg.data
    source = splits[stage.data]
    keys = objectives.batch_keys(stage.objective)
    stage_targets = (targets or {}).get(stage.data, {})
    streamed = isinstance(stage_targets, teacher_cache.TeacherCache)
    word_targets = {} if streamed else {k: v for k, v in stage_targets.items() if k in keys}

    def make(epoch):
        if streamed:  # chunks of the on-disk cache, a few at a time
            return stage_targets.batches(source.windows, keys, dcfg.batch_size,
                                         dcfg.max_seq_length, tagger.tokenizer.pad_token_id,
                                         seed=cfg.seed * 1000 + epoch)
        batches = features.make_batches(source.windows, dcfg.batch_size, dcfg.max_seq_length,
                                        tagger.tokenizer.pad_token_id, word_targets or None,
                                        shuffle=True, seed=cfg.seed * 1000 + epoch)
        if stage.objective == "msd":  # each target batch meets a batch of source sentences
            _add_source_batches(batches, splits["source"], targets["source_cls"], dcfg,
                                tagger.tokenizer.pad_token_id, cfg.seed * 1000 + epoch)
        return batches

    if stage.monitor == "dev_f1":
        def monitor():
            return tagger.score(splits["dev"])["f1"]
    else:
        dev_targets = {k: v for k, v in (targets or {}).get("dev", {}).items() if k in keys}
        dev_batches = tagger.batches(splits["dev"], dev_targets)

        def monitor():
            return -train.mean_loss(model, stage.objective, settings, dev_batches)

    return train.run_stage(
        model, stage, train.epoch_batches(make), monitor, settings, loop,
        checkpoint_dir=_checkpoint_dir(cfg, log_name),
        log_dir=os.path.join(cfg.output_dir, "tensorboard", log_name), baseline=baseline)


SELECT_SENTENCES = 1024  # transfer sentences the weight selection measures the teacher on


def _select_sample(sentences, tokenizer, dcfg, seed: int) -> list[dict]:
    """Batches of a seeded sample of the transfer text, for `student_init.measure`."""
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(sentences), min(SELECT_SENTENCES, len(sentences)),
                             replace=False))
    split = tokenize([sentences[i] for i in pick], tokenizer, None, dcfg)
    return features.make_batches(split.windows, dcfg.eval_batch_size, dcfg.max_seq_length,
                                 tokenizer.pad_token_id)


def _add_source_batches(batches, source: Split, cls: list, dcfg, pad_id: int, seed: int):
    """MSD: adds `src_input_ids`, `src_attention_mask` and the teacher's `teacher_src_cls` of a
    (cycled, shuffled) source batch to every target batch, for the two MMD losses."""
    src = features.make_batches(source.windows, dcfg.batch_size, dcfg.max_seq_length, pad_id,
                                shuffle=True, seed=seed + 1)
    for i, batch in enumerate(batches):
        other = src[i % len(src)]
        batch["src_input_ids"] = other["input_ids"]
        batch["src_attention_mask"] = other["attention_mask"]
        batch["teacher_src_cls"] = np.stack(
            [cls[source.windows[w].sentence] for w in other["window"]]).astype(np.float32)


def _cache_dir(cfg, name: str, layers=(), aux: bool = False) -> str:
    """Where the teacher's outputs on one unlabelled set are cached (named by their content)."""
    what = "-".join(["logits", *(f"h{i}" for i in layers), *(["aux"] if aux else [])])
    return os.path.join(cfg.output_dir, "teacher_cache", f"{name}-{what}")


def _checkpoint_dir(cfg, name: str) -> str:
    return os.path.join(cfg.output_dir, "checkpoints", name)


def _finish_stage(cfg, state, name, log_name, model, folder, result, labels, tokenizer) -> None:
    """Saves the stage's final weights, marks it done, then drops its resume checkpoints."""
    models.save_weights(model, folder, labels, tokenizer)
    info = {"history": result.history, "seconds": result.seconds, "best": result.best}
    state.mark(name, info)
    shutil.rmtree(_checkpoint_dir(cfg, log_name), ignore_errors=True)


def _evaluate(cfg, t_tagger, s_tagger, t_splits, s_splits, teacher_dir, student_dir) -> dict:
    entries = {}
    for name, tagger, splits, folder in (("teacher", t_tagger, t_splits, teacher_dir),
                                         ("student", s_tagger, s_splits, student_dir)):
        scores = tagger.score(splits["test"])
        timing = speed.time_forward(tagger.model, len(tagger.tokenizer), cfg.speed_batch_size,
                                    cfg.speed_seq_length)
        entries[name] = report.model_entry(scores, models.count_params(tagger.model),
                                           models.weights_size_mb(folder), timing["ms_per_batch"])
        # How much of `params` is the word-embedding table (most of a small student on a
        # 250k multilingual vocabulary; --trim_vocab exports it smaller).
        entries[name]["embedding_params"] = models.embedding_params(tagger.model)
        entries[name]["dev_f1"] = tagger.score(splits["dev"])["f1"]  # what model choice saw
        entries[name]["timing"] = timing
        if cfg.data.target_langs:
            entries[name]["target_avg_f1"] = float(np.mean(
                [scores["per_language"][lang]["f1"] for lang in cfg.data.target_langs]))
    extra = {}
    if cfg.data.source_lang:
        extra["protocol"] = {
            "source_lang": cfg.data.source_lang, "target_langs": list(cfg.data.target_langs),
            "strategy": cfg.strategy,
            "model_choice": f"{cfg.data.source_lang} dev only (zero-shot: no target labels "
                            "before evaluation)"}
    return report.metrics_document(entries["teacher"], entries["student"], extra)


def _export(cfg, state, student, teacher, labels, teacher_labels, s_tok, t_tok,
            transfer) -> dict:
    if state.done("export"):
        return dict(state.done("export"))
    name = cfg.export_name or os.path.basename(os.path.normpath(cfg.output_dir))
    info = None
    if cfg.trim_vocab:
        student, s_tok, info = vocab_trim.trim(student, s_tok,
                                               vocab_trim.covered_ids(s_tok, transfer))
        log(f"student vocabulary trimmed to the training and transfer text: "
            f"{info['vocab'][0]} -> {info['vocab'][1]} sub-words, {info['params'][0]} -> "
            f"{info['params'][1]} parameters")
    paths = {}
    for which, model, model_labels, tok, model_name in (
            ("student", student, labels, s_tok, name),
            ("teacher", teacher, teacher_labels, t_tok, name + "-teacher")):
        if which == "student" or cfg.export_teacher:
            done = export_lib.export_formats(model, model_labels, tok, cfg.export_dir,
                                             model_name, cfg.export_formats)
            # "student" / "teacher" name the SavedModel, "student-litert" ... the others.
            paths.update({which if fmt == "savedmodel" else f"{which}-{fmt}": path
                          for fmt, path in done.items()})
    for k, p in list(paths.items()):
        log(f"exported {k} to {p}")
    if info:
        info["export_mb"] = savedmodel.variables_mb(paths["student"])
        paths["trimmed_vocab"] = info
    state.mark("export", paths)
    return dict(paths)
