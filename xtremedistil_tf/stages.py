"""Distillation stages as data: what each stage learns, from which data, with which variables.

One loop (`train.run_stage`) runs any `Stage`. The XtremeDistil schedule is
  1. representations: student layer(s), projected, learn teacher hidden states (transfer data);
  2. logits: student logits learn teacher logits (transfer data), unfreezing from the top;
  3. labels: cross-entropy on the labelled training set, unfreezing from the top.
With gradual unfreezing, stages 2 and 3 become L+1 steps for an L-block student: the head alone,
then the head and the top block, ..., then everything (embeddings last, unless frozen).

The cross-lingual distillers are one stage each, on unlabelled target-language text, all layers
training (as published): `tsl` (probability MSE), `msd` (per-layer probability MSE + MMD on
[CLS]) and `mtmt` (recogniser + similarity teachers on word pairs, after the `similarity` stage
that fine-tunes the similarity teacher on source pairs).
"""

from __future__ import annotations

import dataclasses

from xtremedistil_tf import config as config_lib, objectives

OBJECTIVES = tuple(objectives.REGISTRY)  # what each reads and computes: `objectives`
DATA = ("transfer", "train", "target")


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training stage.

    Attributes:
        name: unique, readable name (used for checkpoints, logs and resume).
        objective: one of `OBJECTIVES`.
        data: "transfer" (unlabelled, teacher targets), "train" (gold labels) or "target"
            (unlabelled target-language text of the zero-shot protocol).
        trainable: variable groups of `TokenClassifier.variable_groups()` that train.
        learning_rate: peak learning rate (linear warm-up and decay over the stage).
        max_epochs: epochs at most.
        patience: epochs without improvement of `monitor` before stopping.
        monitor: "dev_f1" (higher is better) or "dev_loss" (lower is better).
    """

    name: str
    objective: str
    data: str
    trainable: tuple[str, ...]
    learning_rate: float
    max_epochs: int
    patience: int
    monitor: str

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"stage {self.name}: unknown objective {self.objective!r}")
        if self.data not in DATA:
            raise ValueError(f"stage {self.name}: data must be one of {', '.join(DATA)}")
        if self.monitor not in ("dev_f1", "dev_loss"):
            raise ValueError(f"stage {self.name}: monitor must be dev_f1 or dev_loss")
        if not self.trainable:
            raise ValueError(f"stage {self.name}: no variables to train")


def top_groups(num_blocks: int, k: int, freeze_embeddings: bool) -> tuple[str, ...]:
    """The head plus the top `k` blocks; with all blocks, the embeddings too (unless frozen)."""
    groups = ["head"] + [f"block:{i}" for i in range(num_blocks - 1, num_blocks - 1 - k, -1)]
    if k >= num_blocks and not freeze_embeddings:
        groups.append("embeddings")
    return tuple(groups)


def teacher_stage(cfg: config_lib.TeacherConfig, num_blocks: int, aux: bool = False) -> Stage:
    """Fine-tuning the teacher on gold labels (the head only with a frozen encoder).

    With `aux`, the per-layer classifiers and their mixing weights train too.
    """
    k = 0 if cfg.freeze_encoder else num_blocks
    return Stage(
        name="teacher",
        objective="labels",
        data="train",
        trainable=top_groups(num_blocks, k,
                             freeze_embeddings=cfg.freeze_encoder or cfg.freeze_embeddings)
        + (("aux",) if aux else ()),
        learning_rate=cfg.learning_rate,
        max_epochs=cfg.epochs,
        patience=cfg.patience,
        monitor="dev_f1",
    )


def similarity_stage(cfg: config_lib.TeacherConfig, num_blocks: int) -> Stage:
    """MTMT's similarity teacher: the encoder fine-tuned on source word pairs (dev pair loss)."""
    return Stage("similarity_teacher", "similarity", "train",
                 top_groups(num_blocks, 0 if cfg.freeze_encoder else num_blocks,
                            cfg.freeze_encoder or cfg.freeze_embeddings)[1:] or ("head",),
                 cfg.learning_rate, cfg.epochs, cfg.patience, "dev_loss")


def resolve_stages(stages: tuple[str, ...], student: str) -> tuple[str, ...]:
    """The stages `--stages=auto` means for `student` (a `--student` value).

    A student cut from the teacher (`teacher:i,j,...`) starts with the teacher's own blocks and
    head: matching hidden states first bought nothing on the embedded default (student dev F1
    0.466 with it, 0.484 without, at a third more time; docs/default-run.md), so it runs logits
    then labels. Any other student runs all three, the representation stage first.
    """
    if stages != ("auto",):
        return stages
    if student.startswith("teacher:"):
        return ("logits", "labels")
    return config_lib.STAGE_NAMES


def build_schedule(
    cfg: config_lib.DistilConfig, num_blocks: int, freeze_embeddings: bool,
    strategy: str = "xtremedistil", aux: bool = False, student: str = "",
) -> list[Stage]:
    """The student's stages, in order.

    Args:
        cfg: which stages run, and their optimisation settings.
        num_blocks: transformer blocks of the student.
        freeze_embeddings: never train the word embeddings (e.g. compressed teacher embeddings).
        strategy: "xtremedistil" (the staged schedule) or a cross-lingual distiller.
        aux: the student has per-layer classifiers (MSD), which train too.
        student: the `--student` value, for `--stages=auto` (`resolve_stages`).
    """
    cfg = dataclasses.replace(cfg, stages=resolve_stages(cfg.stages, student))
    common = dict(learning_rate=cfg.learning_rate, max_epochs=cfg.epochs, patience=cfg.patience)
    check_frozen_blocks(cfg.freeze_bottom_blocks, num_blocks)
    frozen = cfg.freeze_bottom_blocks
    freeze_embeddings = freeze_embeddings or frozen > 0  # the embeddings are below every block
    top = num_blocks - frozen  # the blocks that may train
    if strategy != "xtremedistil":
        groups = top_groups(num_blocks, top, freeze_embeddings) + ("projection",)
        groups += ("aux",) if aux else ()
        return [Stage(strategy, strategy, "target", groups, monitor="dev_f1", **common)]
    schedule = []
    if "representations" in cfg.stages:
        body = tuple(f"block:{i}" for i in range(frozen, num_blocks)) + ("projection",)
        if not freeze_embeddings:
            body = ("embeddings",) + body
        schedule.append(
            Stage("representations", "representations", "transfer", body, monitor="dev_loss",
                  **common)
        )
    for objective, data in (("logits", "transfer"), ("labels", "train")):
        if objective not in cfg.stages:
            continue
        steps = range(top + 1) if cfg.gradual_unfreezing else [top]
        for k in steps:
            name = f"{objective}/top{k}" if cfg.gradual_unfreezing else objective
            schedule.append(
                Stage(name, objective, data, top_groups(num_blocks, k, freeze_embeddings),
                      monitor="dev_f1", **common)
            )
    return schedule


def check_frozen_blocks(frozen: int, num_blocks: int) -> None:
    """Fails when `--freeze_bottom_blocks` leaves no block of the student to train."""
    if frozen >= num_blocks:
        raise ValueError(f"--freeze_bottom_blocks={frozen} leaves none of the student's "
                         f"{num_blocks} blocks to train; use at most {num_blocks - 1}")


def msd_layer_pairs(
    teacher_aux: tuple[int, ...], teacher_blocks: int, student_blocks: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """MSD's per-layer channels for a student that may be shallower than its teacher.

    Student layer j (1 .. L_s - 1, an index into `hidden_states`) is paired with teacher layer
    round(j · L_t / L_s) when that teacher layer has a classifier; equal depths pair j with j.

    Returns:
        (student layers that get a classifier, position of each one's teacher layer in
        `teacher_aux`).
    """
    student, positions = [], []
    for j in range(1, student_blocks):
        t = round(j * teacher_blocks / student_blocks)
        if t in teacher_aux:
            student.append(j)
            positions.append(teacher_aux.index(t))
    return tuple(student), tuple(positions)


def representation_pairs(
    teacher_layer: str, teacher_blocks: int, student_blocks: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Which teacher hidden states the student's hidden states learn in the first stage.

    Indices are into Hugging Face `hidden_states` (0 = embedding output, i = output of block i).

    Args:
        teacher_layer: "middle" (block L/2, the default: XtremeDistil found middle layers
            transfer best), "last", "uniform" (student block i learns teacher block
            round(i * L_t / L_s)), or an integer index.
        teacher_blocks, student_blocks: number of transformer blocks of each.

    Returns:
        (teacher indices, student indices), equally long.
    """
    if teacher_layer == "uniform":
        student = tuple(range(1, student_blocks + 1))
        teacher = tuple(round(i * teacher_blocks / student_blocks) for i in student)
        return teacher, student
    if teacher_layer == "middle":
        index = max(1, teacher_blocks // 2)
    elif teacher_layer == "last":
        index = teacher_blocks
    else:
        index = int(teacher_layer)
        if not 0 <= index <= teacher_blocks:
            raise ValueError(
                f"--teacher_layer={teacher_layer}: the teacher has hidden states "
                f"0..{teacher_blocks}"
            )
    return (index,), (student_blocks,)
