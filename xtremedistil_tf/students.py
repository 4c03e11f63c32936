"""The ways a student is made from its teacher: a preset shape (`l6-h256`: random blocks, or
cut from the teacher by weight selection), some of the teacher's own blocks (`teacher:0,2,4`),
or a checkpoint (a hub id, a short name such as `xtremedistil-l6-h256`, a folder).

`check_student` reads configs only, so a student that cannot be built fails before the teacher
fine-tunes; `build_student` makes it.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
import transformers

from xtremedistil_tf import (config as config_lib, embeddings as embeddings_lib, models,
                             stages as stages_lib, student_init)

STUDENT_SHORT_NAMES = {
    "xtremedistil-l6-h256": "microsoft/xtremedistil-l6-h256-uncased",
    "xtremedistil-l6-h384": "microsoft/xtremedistil-l6-h384-uncased",
    "xtremedistil-l12-h384": "microsoft/xtremedistil-l12-h384-uncased",
}
_PRESET = config_lib.PRESET
_CUT = config_lib.CUT


def selects_weights(spec: str, init: str) -> bool:
    """Whether `build_student` measures the teacher for a weight selection (a preset student
    with `init="select"`; a `teacher:i,j` cut keeps every dimension and needs no measuring)."""
    return init == "select" and bool(_PRESET.match(spec))


def resolve_student_name(name: str) -> str:
    """Maps a short student name to its hub id; other names pass through."""
    return STUDENT_SHORT_NAMES.get(name, name)


def build_student(
    spec: str,
    teacher: models.TokenClassifier,
    num_labels: int,
    vocab_size: int,
    pad_token_id: int,
    max_seq_length: int,
    dropout: float,
    own_tokenizer: bool,
    head: str = "softmax",
    labels=None,
    special_ids=(),
    embeddings: str = "teacher",
    msd: bool = False,
    init: str = "random",
    select_batches=None,
) -> models.TokenClassifier:
    """Makes the student described by `spec` (see `StudentConfig.model`).

    Unless `own_tokenizer`, the student reads the teacher's tokenizer: with
    `embeddings="teacher"` its word embeddings become the teacher's, compressed to the student
    width by truncated SVD when the widths differ ("random" keeps the initialisation).
    With `msd`, the student gets per-layer classifiers on the layers that
    `stages.msd_layer_pairs` pairs with the teacher's. With `init="select"` a preset student
    is cut from the teacher by weight selection (`student_init`), measured on
    `select_batches` (dicts of `input_ids`/`attention_mask`: a sample of the transfer text);
    its `selection` attribute says what was kept.
    """
    t_cfg = teacher.encoder.config
    if not own_tokenizer:  # the teacher's tokenizer indexes the teacher's table, which can be
        vocab_size = teacher.encoder.embeddings.weight.shape[0]  # longer than len(tokenizer)
    cut = _CUT.match(spec)
    preset = _PRESET.match(spec)
    selection = None
    if init == "select" and not (preset or cut):
        raise ValueError(f"--student_init=select needs a preset (l6-h256, ...) or teacher:i,j "
                         f"student, not {spec}")
    if selects_weights(spec, init):
        encoder, selection = _selected_encoder(spec, teacher, vocab_size, select_batches)
    elif cut:
        encoder = _cut_teacher(teacher, check_cut(spec, teacher.num_blocks))
    elif preset:
        n_layers, hidden, heads = preset_shape(spec)
        cfg = transformers.BertConfig(
            vocab_size=vocab_size,
            hidden_size=hidden,
            num_hidden_layers=n_layers,
            num_attention_heads=heads,
            intermediate_size=4 * hidden,
            max_position_embeddings=max(512, max_seq_length),
            pad_token_id=pad_token_id,
        )
        encoder = models.main_layer(transformers.TFBertModel(cfg, add_pooling_layer=False))
    else:
        hub_or_folder = os.path.isdir(spec) or "/" in resolve_student_name(spec)
        if not own_tokenizer and not hub_or_folder:
            raise ValueError(
                f"--student={spec} is not a folder, hub id, short name "
                f"({', '.join(STUDENT_SHORT_NAMES)}), preset like l4-h256 or teacher:0,2,4"
            )
        encoder = models.load_encoder(resolve_student_name(spec))
        if not own_tokenizer and encoder.config.vocab_size != vocab_size:
            encoder = models.with_vocab(encoder, vocab_size)
    width = encoder.config.hidden_size
    aux = (stages_lib.msd_layer_pairs(teacher.aux_layers, teacher.num_blocks,
                                      len(encoder.encoder.layer))[0] if msd else ())
    student = models.TokenClassifier(
        encoder,
        num_labels,
        dropout,
        projection_dim=t_cfg.hidden_size,
        head=head,
        labels=labels,
        special_ids=special_ids,
        aux_layers=aux,
        name="student",
    ).build_with_dummy()
    if selection is not None:
        student_init.apply_head(student, teacher, selection.dims)
        student.selection = selection
    elif cut and init == "select":  # every dimension kept: the teacher's head as it is
        student_init.apply_head(student, teacher, np.arange(width))
    elif not cut and not own_tokenizer and embeddings == "teacher":
        teacher_emb = teacher.encoder.embeddings.weight.numpy()
        encoder.embeddings.weight.assign(
            embeddings_lib.compress(teacher_emb, width).astype(np.float32)
        )
    return student


def _selected_encoder(spec: str, teacher: models.TokenClassifier, vocab_size: int, batches):
    """A preset-shaped encoder of the teacher's own kind, its weights selected from the
    teacher's (see `student_init`); returns (encoder, selection)."""
    t_cfg = teacher.encoder.config
    n_layers, hidden, _ = preset_shape(spec)
    intermediate = 4 * hidden
    n_heads = student_init.check_select(t_cfg, n_layers, hidden, intermediate)
    cfg = t_cfg.__class__.from_dict(t_cfg.to_dict())
    cfg.hidden_size, cfg.num_hidden_layers = hidden, n_layers
    cfg.num_attention_heads, cfg.intermediate_size = n_heads, intermediate
    cfg.vocab_size = vocab_size
    if batches is None:
        raise ValueError("--student_init=select needs text to measure the teacher on")
    encoder = models.encoder_from_config(cfg)
    ids = tf.ones((1, 4), tf.int32)
    encoder(input_ids=ids, attention_mask=ids)
    importance = student_init.measure(teacher.encoder, batches)
    selection = student_init.choose(importance, teacher.num_blocks, n_layers, hidden, n_heads,
                                    intermediate)
    head_size = t_cfg.hidden_size // t_cfg.num_attention_heads
    student_init.apply(encoder, teacher.encoder, selection, head_size)
    return encoder, selection


def check_cut(spec: str, teacher_blocks: int) -> list[int]:
    """The teacher layers of a `teacher:i,j,...` student; fails for layers the teacher lacks.

    Called as soon as the teacher is loaded, so a typo does not cost a fine-tuning.
    """
    cut = _CUT.match(spec)
    if not cut:
        raise ValueError(f"--student={spec}: write teacher:i,j,... with 0-based layer numbers")
    layers = [int(i) for i in cut.group(1).split(",")]
    bad = [i for i in layers if i >= teacher_blocks]
    if bad:
        raise ValueError(
            f"--student={spec}: the teacher has layers 0..{teacher_blocks - 1}, not {bad}")
    return layers


def preset_shape(spec: str) -> tuple[int, int, int]:
    """(blocks, width, attention heads) of an `l<blocks>-h<width>` preset: one head per 64 units."""
    preset = _PRESET.match(spec)
    n_layers, hidden = int(preset.group(1)), int(preset.group(2))
    heads = max(1, hidden // 64)
    if n_layers < 1 or hidden % heads:
        raise ValueError(f"--student={spec}: needs at least 1 block and a width divisible by "
                         f"its {heads} attention heads (one per 64 units); try "
                         f"l{max(1, n_layers)}-h{heads * 64}")
    return n_layers, hidden, heads


def check_student(spec: str, teacher: models.TokenClassifier, max_seq_length: int,
                  init: str = "random") -> int:
    """Fails for a student that cannot be built or read `max_seq_length` tokens; returns its blocks.

    Reads configs only, so it runs before the teacher fine-tunes: a wrong student must not cost
    a fine-tuning.
    """
    if spec.startswith("teacher:"):
        return len(check_cut(spec, teacher.num_blocks))
    if _PRESET.match(spec):
        blocks, hidden, _ = preset_shape(spec)
        if init == "select":
            student_init.check_select(teacher.encoder.config, blocks, hidden, 4 * hidden)
        return blocks
    name = resolve_student_name(spec)
    cfg = models.read_hf_config(name)
    for field in ("hidden_size", "num_attention_heads", "num_hidden_layers"):
        if not hasattr(cfg, field):
            raise ValueError(f"--student={spec}: its config has no {field}; use a BERT, RoBERTa "
                             "or XLM-R checkpoint")
    if cfg.hidden_size % cfg.num_attention_heads:
        raise ValueError(f"--student={spec}: hidden size {cfg.hidden_size} is not divisible by "
                         f"its {cfg.num_attention_heads} attention heads; fix its config.json")
    positions = models.max_positions(cfg)
    if positions < max_seq_length:
        raise ValueError(f"--max_seq_length={max_seq_length} is longer than the {positions} "
                         f"positions of student {spec}; lower --max_seq_length")
    return int(cfg.num_hidden_layers)


def _cut_teacher(teacher: models.TokenClassifier, layers: list[int]):
    cfg = teacher.encoder.config.__class__.from_dict(teacher.encoder.config.to_dict())
    cfg.num_hidden_layers = len(layers)
    encoder = models.encoder_from_config(cfg)
    ids = tf.ones((1, 4), tf.int32)
    encoder(input_ids=ids, attention_mask=ids)
    encoder.embeddings.set_weights(teacher.encoder.embeddings.get_weights())
    for j, i in enumerate(layers):
        encoder.encoder.layer[j].set_weights(teacher.encoder.encoder.layer[i].get_weights())
    return encoder
