"""The whole job: data → teacher → student → teacher targets → stages → evaluation → export.

`run(config)` is what `run_distil.py` calls; `_run` reads as those phases, one function each.
A stage's batches, monitor and checkpoints are `run_stages`; test scores and exports,
`run_results`.
Each finished step (teacher fine-tuning, every student stage, the export) is recorded in
`<output_dir>/state.json` (`run_state`) next to its weights, so rerunning the same command after
an interruption continues after the last finished step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil

import numpy as np
import tensorflow as tf

from xtremedistil_tf import (
    config as config_lib,
    distribute as distribute_lib,
    features,
    labels as labels_lib,
    model_folders,
    models,
    objectives,
    precision,
    report,
    run_data,
    run_results,
    run_stages,
    run_state,
    stages as stages_lib,
    startup,
    students,
    teacher_cache,
    teacher_labels as teacher_labels_lib,
    teacher_outputs,
    train,
)
from xtremedistil_tf.tagging import (
    Split,
    Tagger,
    teacher_label_ids,
    teacher_targets,
    tokenize,
    window_targets,
)
from xtremedistil_tf.report import log


def _similarity_teacher(job: _Job, t_tok, t_splits):
    """MTMT's similarity teacher: the teacher checkpoint fine-tuned on source word pairs."""
    cfg, state, labels = job.cfg, job.state, job.data.labels
    model, _, _ = models.build_teacher(cfg.teacher.model, labels, cfg.teacher.dropout)
    folder = os.path.join(cfg.output_dir, "similarity_teacher")
    if state.done("similarity_teacher"):
        model_folders.load_weights(model, folder)
        job.history += state.done("similarity_teacher")["history"]
        log("similarity teacher: fine-tuned in an earlier run, weights loaded")
        return model
    log("similarity teacher: fine-tuning on source word pairs (same entity type or not)")
    settings = objectives.LossSettings(label_types=labels_lib.label_types(labels))
    tagger = Tagger(model, t_tok, cfg.data, labels)
    stage = stages_lib.similarity_stage(cfg.teacher, model.num_blocks)
    loop = dataclasses.replace(run_stages.teacher_loop(cfg), reduce_lr_on_plateau=False)
    result = run_stages.run_stage(model, stage, t_splits, tagger, cfg, settings, loop,
                                  log_name="similarity_teacher")
    run_stages.finish_stage(cfg, state, "similarity_teacher", "similarity_teacher", model,
                            folder, result, labels, t_tok)
    job.history += result.history
    return model


# --------------------------------------------------------------------------- the run


def run(cfg: config_lib.RunConfig) -> dict:
    """Runs the job described by `cfg` and returns the metrics document (also on disk).

    Under `--distribution_strategy` every model is built in the strategy's scope and every
    training stage runs on all replicas; a non-chief worker runs the same steps (collective ops
    need it) but writes into `<output_dir>/.worker<i>`, so only the chief's files are results.
    """
    distribution = distribute_lib.make_strategy(cfg.distribution, cfg.tpu, cfg.cpu_devices)
    settings = cfg  # what a resumed run must match (before per-worker changes)
    if not distribute_lib.is_chief(distribution):
        scratch = distribute_lib.worker_folder(distribution, cfg.output_dir)
        cfg = dataclasses.replace(cfg, output_dir=scratch,
                                  export_dir=os.path.join(scratch, "saved_models"))
    if cfg.per_replica_batch_size:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(
            cfg.data,
            batch_size=cfg.per_replica_batch_size * distribute_lib.replicas(distribution)))
    if distribution is not None:
        log(f"distribution: {distribute_lib.describe(distribution)}; global batch "
            f"{cfg.data.batch_size} "
            f"({cfg.data.batch_size / distribution.num_replicas_in_sync:g} per replica)")
    with distribution.scope() if distribution else contextlib.nullcontext():
        return _run(cfg, settings)


def _check_plan(cfg: config_lib.RunConfig, teacher) -> None:
    """Fails now for settings that would only fail after the teacher's fine-tuning.

    The sequence length must fit both models' position embeddings, the student must be buildable
    (`students.check_student`) and its representation layer pairing must exist. An MSD student
    without layers to pair with the teacher's per-layer classifiers gets a warning.
    """
    length = cfg.data.max_seq_length
    teacher_positions = models.max_positions(teacher.encoder.config)
    if length > teacher_positions:
        raise ValueError(f"--max_seq_length={length} is longer than the {teacher_positions} "
                         f"positions of teacher {cfg.teacher.model}; lower --max_seq_length")
    blocks = students.check_student(cfg.student.model, teacher, length, cfg.student.init)
    stages_lib.representation_pairs(cfg.distil.teacher_layer, teacher.num_blocks, blocks)
    stages_lib.check_frozen_blocks(cfg.distil.freeze_bottom_blocks, blocks)
    if cfg.strategy == "msd" and not stages_lib.msd_layer_pairs(
            teacher.aux_layers, teacher.num_blocks, blocks)[0]:
        log(f"warning: --strategy=msd: no layer of the {blocks}-block student pairs with a "
            f"teacher layer that has a classifier ({list(teacher.aux_layers)}), so only the "
            "output distributions and MMD terms are distilled; use a deeper student for "
            "per-layer channels")


@dataclasses.dataclass
class _Job:
    """What the phases of one run share."""

    cfg: config_lib.RunConfig
    state: run_state.RunState
    data: run_data.Data
    history: list  # every epoch row of every stage, in order


@dataclasses.dataclass
class _Side:
    """One model of the run at work: the teacher's or the student's."""

    model: models.TokenClassifier
    labels: list[str]  # its own (a ready teacher keeps its checkpoint's)
    tokenizer: object
    splits: dict[str, Split]  # the data tokenized for it
    tagger: Tagger
    folder: str  # where its final weights are saved
    label_ids: dict[str, int] | None = None  # data label -> the id it learns (`teacher_label_ids`)


def _run(cfg: config_lib.RunConfig, settings: config_lib.RunConfig) -> dict:
    os.makedirs(cfg.output_dir, exist_ok=True)
    tf.keras.utils.set_random_seed(cfg.seed)
    state = run_state.RunState(cfg.output_dir, settings)
    with run_state.RunClock(cfg.output_dir) as clock:
        state.clock = clock
        return _run_phases(cfg, state, clock)


def _run_phases(cfg: config_lib.RunConfig, state: run_state.RunState,
                clock: run_state.RunClock) -> dict:
    data = run_data.load_data(cfg.data)
    cfg = dataclasses.replace(cfg, data=data.config)
    log(f"data: {', '.join(f'{k} {len(v)} sentences' for k, v in data.splits.items())}, "
        f"transfer {len(data.unlabelled['transfer'])}; {len(data.labels)} labels")
    job = _Job(cfg, state, data, [])

    if cfg.mixed_precision != "none":
        log(f"mixed precision: training in {cfg.mixed_precision} (float32 variables; scores "
            "and speeds are of float32 rebuilds)")
        warning = precision.hardware_warning(cfg.mixed_precision, startup.cpu_features(),
                                             len(tf.config.list_physical_devices("GPU")))
        if warning:
            log(warning)
    with precision.policy(cfg.mixed_precision):
        teacher, ready = _teacher_phase(job)
        student, schedule, loss_settings = _student_phase(job, teacher, ready)
        todo = _resumed_stages(job, student, schedule)
        targets = _teacher_targets_phase(job, teacher, student, todo)
        _stages_phase(job, student, schedule, todo, loss_settings, targets)
    shutil.rmtree(os.path.join(cfg.output_dir, "teacher_cache"), ignore_errors=True)
    if cfg.mixed_precision != "none":
        teacher, student = _float32_side(cfg, teacher), _float32_side(cfg, student)

    log("evaluating teacher and student on test")  # the only place test labels are read
    doc = run_results.evaluate(cfg, teacher, student)
    if job.history:
        report.write_json(os.path.join(cfg.output_dir, "history.json"), job.history)
        report.plot_history(job.history, os.path.join(cfg.output_dir, "curves.png"))
    doc["data"] = {**{k: len(v) for k, v in data.splits.items()},
                   **{k: len(v) for k, v in data.unlabelled.items()}}
    doc["export"] = run_results.export(cfg, state, student, teacher, data.unlabelled["transfer"])
    if "trimmed_vocab" in doc["export"]:
        doc["student"]["trimmed_vocab"] = doc["export"].pop("trimmed_vocab")
    doc["wall_seconds"] = clock.seconds()  # every attempt's, a resumed run's too
    doc["attempts"] = clock.attempts
    doc["peak_rss_mb"] = train.peak_rss_mb()  # of this process (a resumed run: since it resumed)
    report.write_json(os.path.join(cfg.output_dir, "metrics.json"), doc)
    return doc


def _float32_side(cfg: config_lib.RunConfig, side: _Side) -> _Side:
    """`side` with its model rebuilt in float32 from its saved weights (after mixed-precision
    training: what a run reports and exports is the float32 model)."""
    model, _ = model_folders.load_model(side.folder, name=side.model.name)
    tagger = side.tagger
    return dataclasses.replace(side, model=model, tagger=Tagger(
        model, side.tokenizer, cfg.data, tagger.labels, tagger.convert, xla=cfg.xla))


def _teacher_phase(job: _Job) -> tuple[_Side, bool]:
    """Builds the teacher and fine-tunes it (or loads an earlier fine-tuning).

    Returns:
        (teacher, ready): `ready` says the checkpoint already was a token classifier with its
        own head. The teacher's tagger `convert`s a ready teacher's label distributions to the
        data's labels.
    """
    cfg, state, labels = job.cfg, job.state, job.data.labels
    dcfg = cfg.data
    t_tok = models.load_tokenizer(cfg.teacher.model)
    model, teacher_labels, ready = models.build_teacher(
        cfg.teacher.model, labels, cfg.teacher.dropout, cfg.teacher.head, t_tok.all_special_ids,
        cfg.teacher.aux_from_layer, new_head=cfg.teacher.new_head)
    convert = None
    if teacher_labels != labels:
        teacher_labels_lib.map_teacher_labels(teacher_labels, labels)  # fails early if unmappable

        def convert(p):
            return teacher_labels_lib.teacher_probs_to_data(p, teacher_labels, labels)
    # A ready teacher fine-tuned further learns gold tags in its own label space.
    t_label_ids = teacher_label_ids(teacher_labels, labels)
    t_splits = {k: tokenize(v, t_tok, t_label_ids, dcfg) for k, v in job.data.splits.items()}
    _check_plan(cfg, model)  # before any fine-tuning
    fine_tune = cfg.teacher.fine_tune == "yes" or (cfg.teacher.fine_tune == "auto" and not ready)
    if ready and fine_tune:
        log(f"teacher: fine-tuning the ready token classifier further with its own labels "
            f"({' '.join(teacher_labels)}; the data's tags mapped to them)")
    teacher = _Side(model, teacher_labels, t_tok, t_splits,
                    Tagger(model, t_tok, dcfg, labels, convert, xla=cfg.xla),
                    os.path.join(cfg.output_dir, "teacher"), t_label_ids)
    if cfg.teacher.checkpoint:  # fine-tuned by an earlier run: reuse, never retrain
        model_folders.check_compatible(model, cfg.teacher.checkpoint, teacher_labels)
        model_folders.load_weights(model, cfg.teacher.checkpoint)
        log(f"teacher: fine-tuned weights loaded from {cfg.teacher.checkpoint}")
    elif fine_tune and state.done("teacher"):
        model_folders.load_weights(model, teacher.folder)
        job.history += state.done("teacher")["history"]
        log("teacher: fine-tuned in an earlier run, weights loaded")
    elif fine_tune and cfg.teacher.epochs > 0:
        stage = stages_lib.teacher_stage(cfg.teacher, model.num_blocks,
                                         aux=bool(model.aux_layers))
        log(f"teacher: fine-tuning {cfg.teacher.model} ({model.num_blocks} blocks)")
        if cfg.teacher.head_init == "prior" and not ready:
            model.head.set_prior_bias(_label_counts(t_splits["train"], len(teacher_labels)))
        settings = objectives.LossSettings(
            label_all_subwords=dcfg.label_all_subwords, aux_weight=cfg.teacher.aux_weight,
            class_weights=objectives.class_weights_for(teacher_labels, cfg.teacher.o_weight,
                                                       model.head))
        result = run_stages.run_stage(model, stage, t_splits, teacher.tagger, cfg, settings,
                                      run_stages.teacher_loop(cfg))
        run_stages.finish_stage(cfg, state, "teacher", "teacher", model, teacher.folder, result,
                                teacher_labels, t_tok)
        job.history += result.history
    if not os.path.exists(teacher.folder):
        model_folders.save_weights(model, teacher.folder, teacher_labels, t_tok)
    return teacher, ready


def _student_phase(job: _Job, teacher: _Side, ready: bool):
    """Builds the student from the teacher and plans its stages.

    Returns:
        (student, schedule, loss settings).
    """
    cfg, labels, dcfg = job.cfg, job.data.labels, job.cfg.data
    t_tok, t_model = teacher.tokenizer, teacher.model
    s_tok = (models.load_tokenizer(students.resolve_student_name(cfg.student.model))
             if cfg.student.own_tokenizer else t_tok)
    selecting = students.selects_weights(cfg.student.model, cfg.student.init)
    source = t_model
    if selecting and cfg.mixed_precision != "none":
        # Weight selection recomputes the teacher's blocks to measure (and check) them: in
        # float32, on a float32 rebuild of the teacher (the student still trains mixed).
        with precision.policy("none"):
            source, _ = model_folders.load_model(teacher.folder, name=t_model.name)
    model = students.build_student(
        cfg.student.model, source, len(labels), len(t_tok), t_tok.pad_token_id,
        dcfg.max_seq_length, cfg.student.dropout, cfg.student.own_tokenizer,
        cfg.student.head, labels, s_tok.all_special_ids, cfg.student.embeddings,
        msd=cfg.strategy == "msd", init=cfg.student.init,
        select_batches=(_select_sample(job.data.unlabelled["transfer"], t_tok, dcfg, cfg.seed)
                        if selecting else None))
    if selecting:
        sel = model.selection
        log(f"student: weight selection from the teacher: blocks {sel.layers}, "
            f"{len(sel.dims)} of {t_model.hidden_size} residual dimensions, "
            f"{len(sel.heads[0])} heads and {len(sel.neurons[0])} FFN neurons per block")
    msd_pairs = (stages_lib.msd_layer_pairs(t_model.aux_layers, t_model.num_blocks,
                                            model.num_blocks)
                 if cfg.strategy == "msd" else None)
    if cfg.student.copy_transitions and model.head.crf and t_model.head.crf and not ready:
        for mine, theirs in zip(model.head.crf.weights, t_model.head.crf.weights, strict=True):
            mine.assign(theirs)
    _, s_layers = stages_lib.representation_pairs(
        cfg.distil.teacher_layer, t_model.num_blocks, model.num_blocks)
    settings = objectives.LossSettings(
        s_layers, cfg.distil.logit_loss, cfg.distil.temperature, dcfg.label_all_subwords,
        aux_targets=msd_pairs[1] if msd_pairs else (), msd_beta=cfg.distil.msd_beta,
        mmd_weight=cfg.distil.mmd_weight, mtmt_alpha=cfg.distil.mtmt_alpha,
        target_temperature=cfg.distil.target_temperature,
        class_weights=objectives.class_weights_for(labels, cfg.distil.o_weight, model.head))
    label_ids = {label: i for i, label in enumerate(labels)}
    s_splits = (dict(teacher.splits) if s_tok is t_tok and teacher.label_ids == label_ids
                else {k: tokenize(v, s_tok, label_ids, dcfg)
                      for k, v in job.data.splits.items()})
    student = _Side(model, labels, s_tok, s_splits, Tagger(model, s_tok, dcfg, labels,
                                                           xla=cfg.xla),
                    os.path.join(cfg.output_dir, "student"))
    schedule = stages_lib.build_schedule(cfg.distil, model.num_blocks,
                                         cfg.student.freeze_embeddings, cfg.strategy,
                                         aux=bool(model.aux_layers), student=cfg.student.model)
    log(f"student: {cfg.student.model} ({model.num_blocks} blocks, width "
        f"{model.hidden_size}); strategy {cfg.strategy}; stages: "
        f"{', '.join(s.name for s in schedule)}")
    return student, schedule, settings


def _resumed_stages(job: _Job, student: _Side, schedule) -> list:
    """The stages still to run; the finished ones' weights and history are loaded."""
    todo = [s for s in schedule if not job.state.done(s.name)]
    if len(todo) < len(schedule):
        model_folders.load_weights(student.model, student.folder)
        for s in schedule:
            if job.state.done(s.name):
                job.history += job.state.done(s.name)["history"]
        log(f"student: {len(schedule) - len(todo)} stages finished in an earlier run, resuming")
    return todo


def _teacher_targets_phase(job: _Job, teacher: _Side, student: _Side, todo) -> dict:
    """The teacher outputs the remaining stages learn from, by data: `transfer` (streamed from
    disk), `dev` (for dev-loss monitoring), `target` (zero-shot text; MTMT adds the similarity
    teacher's word vectors) and MSD's `source_cls`. Adds the student's splits of that text."""
    cfg, dcfg, labels, unlabelled = job.cfg, job.cfg.data, job.data.labels, job.data.unlabelled
    t_model, t_tok, s_tok = teacher.model, teacher.tokenizer, student.tokenizer
    convert = teacher.tagger.convert
    targets = {}
    if any(s.data == "transfer" for s in todo):
        t_layers, _ = stages_lib.representation_pairs(
            cfg.distil.teacher_layer, t_model.num_blocks, student.model.num_blocks)
        cached_layers = t_layers if any(s.objective == "representations" for s in todo) else ()
        log(f"caching teacher outputs (logits, hidden states {list(cached_layers)}) on transfer "
            "and dev data")
        tagger = Tagger(t_model, t_tok, dcfg, labels, convert, hidden_layers=cached_layers)
        student.splits["transfer"], targets["transfer"] = teacher_outputs.streamed_targets(
            tagger, unlabelled["transfer"], s_tok, dcfg,
            _cache_dir(cfg, "transfer", tagger, unlabelled["transfer"], cached_layers))
        targets["dev"] = window_targets(teacher_targets(tagger, teacher.splits["dev"]),
                                        student.splits["dev"].windows)
    if any(s.data == "target" for s in todo):
        log(f"caching teacher outputs on {len(unlabelled['target'])} target-language sentences")
        tagger = Tagger(t_model, t_tok, dcfg, labels, convert, with_aux=cfg.strategy == "msd")
        student.splits["target"], targets["target"] = teacher_outputs.in_memory_targets(
            tagger, unlabelled["target"], s_tok, dcfg,
            _cache_dir(cfg, "target", tagger, unlabelled["target"], aux=cfg.strategy == "msd"))
        if cfg.strategy == "mtmt":
            similar = _similarity_teacher(job, t_tok, teacher.splits)
            sim_tagger = Tagger(similar, t_tok, dcfg, labels, hidden_layers=(similar.num_blocks,))
            sim = window_targets(teacher_outputs.cached_teacher_targets(
                sim_tagger, unlabelled["target"], dcfg,
                _cache_dir(cfg, "similarity", sim_tagger, unlabelled["target"],
                           (similar.num_blocks,))),
                student.splits["target"].windows)  # the split made just above
            targets["target"]["teacher_sim"] = [h[:, 0] for h in sim["teacher_hidden"]]
        if cfg.strategy == "msd":
            source = tokenize(unlabelled["source"], t_tok, None, dcfg)
            student.splits["source"] = (source if s_tok is t_tok
                                        else tokenize(unlabelled["source"], s_tok, None, dcfg))
            targets["source_cls"] = teacher_outputs.sentence_cls(t_model, source, t_tok, dcfg)
    return targets


def _stages_phase(job: _Job, student: _Side, schedule, todo, settings, targets) -> None:
    """Runs the remaining stages; F1 stages must beat the best dev F1 so far, so the final
    student is the best one seen."""
    cfg, state = job.cfg, job.state
    best_f1 = max([state.done(s.name)["best"] for s in schedule
                   if s.monitor == "dev_f1" and state.done(s.name)], default=-math.inf)
    for stage in todo:
        baseline = best_f1 if stage.monitor == "dev_f1" else -math.inf
        log_name = f"student_{stage.name.replace('/', '_')}"
        result = run_stages.run_stage(student.model, stage, student.splits, student.tagger, cfg,
                                      settings, run_stages.student_loop(cfg), targets=targets,
                                      log_name=log_name, baseline=baseline)
        if stage.monitor == "dev_f1":
            best_f1 = max(best_f1, result.best)
        run_stages.finish_stage(cfg, state, stage.name, log_name, student.model, student.folder,
                                result, student.labels, student.tokenizer)
        job.history += result.history


SELECT_SENTENCES = 1024  # transfer sentences the weight selection measures the teacher on


def _label_counts(split: Split, num_labels: int) -> np.ndarray:
    """How often each label id tags a word in `split` (the head's prior)."""
    ids = np.concatenate([w.word_labels for w in split.windows] or [np.zeros(0, np.int64)])
    return np.bincount(ids[ids >= 0], minlength=num_labels)[:num_labels]


def _select_sample(sentences, tokenizer, dcfg, seed: int) -> list[dict]:
    """Batches of a seeded sample of the transfer text, for `student_init.measure`."""
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(sentences), min(SELECT_SENTENCES, len(sentences)),
                             replace=False))
    split = tokenize([sentences[i] for i in pick], tokenizer, None, dcfg)
    return features.make_batches(split.windows, dcfg.eval_batch_size, dcfg.max_seq_length,
                                 tokenizer.pad_token_id)


def _cache_dir(cfg, name: str, tagger: Tagger, sentences, layers=(), aux: bool = False) -> str:
    """Where the teacher's outputs on one unlabelled set are cached, named by what is cached:
    inside the run folder, or under `--teacher_cache_dir` with a key of what they depend on
    (`teacher_outputs.cache_key`), where other runs find them (also a finished one with more
    outputs than this run needs)."""
    what = "-".join(["logits", *(f"h{i}" for i in layers), *(["aux"] if aux else [])])
    if not cfg.teacher_cache_dir:
        return os.path.join(cfg.output_dir, "teacher_cache", f"{name}-{what}")
    key = teacher_outputs.cache_key(tagger, sentences, cfg.data)
    folder = os.path.join(cfg.teacher_cache_dir, f"{name}-{what}-{key}")
    if not os.path.isdir(folder):  # a finished cache with more outputs serves as well
        folder = teacher_cache.find_complete(cfg.teacher_cache_dir, name, what.split("-"), key,
                                             len(sentences)) or folder
    log(f"teacher cache: {folder} ({'reused' if os.path.isdir(folder) else 'new'})")
    return folder
