"""Encoders, the token classifier that wraps them, and the ways a student is made.

Every model here is a `TokenClassifier`: a Hugging Face TF *main layer* (`TFBertMainLayer`,
`TFXLMRobertaMainLayer`, ...) plus dropout and a dense head, returning a dict with `logits` and,
when asked, `hidden_states`. Variables are grouped (`embeddings`, `block:i`, `head`,
`projection`) so distillation stages can say which of them train.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import tensorflow as tf
import transformers

from xtremedistil_tf import (
    embeddings as embeddings_lib,
    heads as heads_lib,
    stages as stages_lib,
    student_init,
)

keras = tf.keras
# Dropout layers draw from `tf.random.Generator`s (instead of stateful random ops whose state
# lives in the kernel), so training can set each layer's stream from (seed, step): a stage
# resumed from a checkpoint draws the dropout masks an uninterrupted one would
# (`train.dropout_generators`). Must be set before any layer is built.
keras.backend.experimental.enable_tf_random_generator()

STUDENT_SHORT_NAMES = {
    "xtremedistil-l6-h256": "microsoft/xtremedistil-l6-h256-uncased",
    "xtremedistil-l6-h384": "microsoft/xtremedistil-l6-h384-uncased",
    "xtremedistil-l12-h384": "microsoft/xtremedistil-l12-h384-uncased",
}
_PRESET = re.compile(r"^l(\d+)-h(\d+)$")
_CUT = re.compile(r"^teacher:(\d+(,\d+)*)$")
_ROBERTA_LIKE = ("roberta", "xlm-roberta", "camembert")
ENCODER_FILE = "encoder.json"  # written by `save_weights`, read by `load_model`
TOKENIZER_DIR = "tokenizer"  # the tokenizer a saved model reads, beside its weights


class TokenClassifier(keras.Model):
    """An encoder main layer + a tagging head (see `heads.TaggingHead`) over sub-word positions.

    Args:
        encoder: a Hugging Face TF main layer (has `embeddings` and `encoder.layer`).
        num_labels: classes of the head.
        dropout: dropout rate in the head.
        projection_dim: if set, a dense projection of hidden states to this width (used to
            compare student representations with a wider teacher's).
        classifier: an existing dense classifier to reuse (ready token-classification checkpoints).
        head: head kind, one of `heads.HEADS`.
        labels: label names (CRF heads forbid impossible IOB2 transitions when decoding).
        special_ids: token ids of special tokens ([CLS], [SEP], <s>, ...): CRF chains skip them.
        aux_layers: indices into `hidden_states` that get their own linear classifier
            (per-layer heads; their logits are returned as `aux_logits`, and learnable mixing
            weights `aux_weights` say how much each counts in the training loss).
    """

    def __init__(self, encoder, num_labels, dropout=0.1, projection_dim=None, classifier=None,
                 head="softmax", labels=None, special_ids=(), aux_layers=(), **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.num_labels = num_labels
        self.dropout_rate = dropout
        self.projection_dim = projection_dim
        self.head_kind = head
        self.special_ids = tuple(int(i) for i in special_ids)
        self.head = heads_lib.TaggingHead(
            head, num_labels, encoder.config.hidden_size, dropout, labels=labels,
            classifier=classifier, name="head")
        self.projection = (
            keras.layers.Dense(projection_dim, name="projection") if projection_dim else None
        )
        self.aux_layers = tuple(int(i) for i in aux_layers)
        self.aux_dropout = keras.layers.Dropout(dropout)
        self.aux_classifiers = [
            keras.layers.Dense(num_labels, name=f"aux_classifier_{i}") for i in self.aux_layers
        ]
        self.aux_weights = (
            self.add_weight(name="aux_weights", shape=(len(self.aux_layers),),
                            initializer="zeros") if self.aux_layers else None
        )

    @property
    def classifier(self):
        return self.head.classifier

    @property
    def hidden_size(self) -> int:
        return self.encoder.config.hidden_size

    @property
    def num_blocks(self) -> int:
        return len(self.encoder.encoder.layer)

    def call(self, inputs, training=False, output_hidden_states=False):
        """Runs the model.

        Args:
            inputs: dict with `input_ids` and `attention_mask`, int32 `[B, T]`.
            training: dropout on/off.
            output_hidden_states: also return `hidden_states`, a tuple of L+1 `[B, T, H]`
                (embedding output first).

        Returns:
            dict with `logits` `[B, T, K]` (and `hidden_states`; with per-layer heads also
            `aux_logits`, a list of `[B, T, K]` in `aux_layers` order).
        """
        out = self.encoder(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            output_hidden_states=output_hidden_states or bool(self.aux_layers),
            training=training,
        )
        logits = self.head(out.last_hidden_state, inputs["attention_mask"], training=training)
        result = {"logits": logits}
        if output_hidden_states:
            result["hidden_states"] = out.hidden_states
        if self.aux_layers:
            result["aux_logits"] = [
                clf(self.aux_dropout(out.hidden_states[i], training=training))
                for i, clf in zip(self.aux_layers, self.aux_classifiers)
            ]
        return result

    def token_mask(self, input_ids, attention_mask):
        """`[B, T]` bool: real sub-words (not padding, not special tokens)."""
        mask = tf.cast(attention_mask, tf.bool)
        if self.special_ids:
            special = tf.reduce_any(
                tf.equal(tf.expand_dims(input_ids, -1),
                         tf.constant(self.special_ids, input_ids.dtype)), -1)
            mask &= ~special
        return mask

    def decode(self, logits, input_ids, attention_mask):
        """Label ids `[B, T]` int32 (Viterbi for CRF heads, argmax otherwise)."""
        return self.head.decode(logits, self.token_mask(input_ids, attention_mask))

    def probabilities(self, logits, input_ids, attention_mask):
        """`[B, T, K]` float32 label probabilities (CRF heads: posterior marginals)."""
        return self.head.probabilities(logits, self.token_mask(input_ids, attention_mask))

    def project(self, hidden):
        """Maps `[..., H_student]` to the teacher width (identity without a projection)."""
        return self.projection(hidden) if self.projection is not None else hidden

    def build_with_dummy(self):
        """Creates all variables by running one tiny batch."""
        ids = tf.ones((1, 4), tf.int32)
        out = self({"input_ids": ids, "attention_mask": ids}, output_hidden_states=True)
        if self.projection is not None:
            self.project(out["hidden_states"][-1])
        return self

    def variable_groups(self) -> dict[str, list[tf.Variable]]:
        """Trainable variables by group: `embeddings`, `block:0..L-1`, `head`, `projection`.

        The pooler (unused for tagging) is in no group and never trains.
        """
        groups = {"embeddings": list(self.encoder.embeddings.trainable_variables)}
        for i, block in enumerate(self.encoder.encoder.layer):
            groups[f"block:{i}"] = list(block.trainable_variables)
        groups["head"] = list(self.head.trainable_variables)
        groups["projection"] = (
            list(self.projection.trainable_variables) if self.projection is not None else []
        )
        groups["aux"] = [v for clf in self.aux_classifiers for v in clf.trainable_variables]
        if self.aux_weights is not None:
            groups["aux"].append(self.aux_weights)
        return groups

    def get_config(self):
        return {
            "num_labels": self.num_labels,
            "dropout": self.dropout_rate,
            "projection_dim": self.projection_dim,
            "head": self.head_kind,
            "special_ids": list(self.special_ids),
            "aux_layers": list(self.aux_layers),
        }


# --------------------------------------------------------------------------- loading


def resolve_student_name(name: str) -> str:
    """Maps a short student name to its hub id; other names pass through."""
    return STUDENT_SHORT_NAMES.get(name, name)


def _main_layer(hf_model):
    main = getattr(hf_model, hf_model.base_model_prefix, None)
    if main is None or not hasattr(main, "embeddings") or not hasattr(main, "encoder"):
        raise ValueError(
            f"{type(hf_model).__name__} is not a BERT-like encoder (embeddings + encoder.layer); "
            "use a BERT, RoBERTa or XLM-R checkpoint"
        )
    return main


def read_hf_config(name_or_path: str) -> transformers.PretrainedConfig:
    """Loads a model's config from a folder or the hub, with a one-line error if it is missing."""
    try:
        return transformers.AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"cannot load model {name_or_path!r}: no config.json there or on the hub "
            f"({str(e).splitlines()[0]}); check the folder or hub id"
        ) from None


def is_token_classifier(config: transformers.PretrainedConfig) -> bool:
    """True for a checkpoint that already is a token-classification model with its own labels."""
    archs = getattr(config, "architectures", None) or []
    default = {i: f"LABEL_{i}" for i in range(len(config.id2label or {}))}
    return any(a.endswith("ForTokenClassification") for a in archs) and config.id2label != default


def _from_pretrained(cls, name_or_path, **kwargs):
    # Prefer safetensors where a folder has both (no pickle); transformers picks it by default.
    try:
        return cls.from_pretrained(name_or_path, **kwargs)
    except TypeError:
        kwargs.pop("add_pooling_layer", None)
        return cls.from_pretrained(name_or_path, **kwargs)
    except OSError as e:
        raise ValueError(
            f"cannot load weights of {name_or_path!r} ({str(e).splitlines()[0]}); the folder "
            "needs tf_model.h5 or model.safetensors"
        ) from None


def load_encoder(name_or_path: str):
    """Loads a Hugging Face TF encoder's main layer (from `tf_model.h5` or `model.safetensors`)."""
    hf = _from_pretrained(transformers.TFAutoModel, name_or_path, add_pooling_layer=False)
    return _main_layer(hf)


def load_tokenizer(name_or_path: str):
    """Loads the fast tokenizer of a folder or hub id (word alignment needs `word_ids()`)."""
    try:
        tok = transformers.AutoTokenizer.from_pretrained(name_or_path, use_fast=True)
    except (OSError, ValueError) as e:
        first = str(e).splitlines()[0]
        if "SentencePiece" in first and not transformers.utils.is_sentencepiece_available():
            # Folders with sentencepiece.bpe.model and no tokenizer.json (XLM-R checkpoints
            # such as jplu/tf-xlm-r-ner-40-lang) are converted, which needs the package.
            raise ValueError(
                f"cannot load the tokenizer of {name_or_path!r}: it has a SentencePiece model "
                "and no tokenizer.json; pip install sentencepiece==0.2.* (in requirements.txt)"
            ) from None
        raise ValueError(f"cannot load a tokenizer from {name_or_path!r} ({first})") from None
    if not tok.is_fast:
        raise ValueError(f"{name_or_path!r} has no fast tokenizer (tokenizer.json); add one")
    return tok


def build_teacher(name_or_path: str, labels: list[str], dropout: float, head: str = "softmax",
                  special_ids=(), aux_from_layer: int = 0, new_head: bool = False):
    """Builds the teacher.

    Args:
        name_or_path: hub id or folder.
        labels: the data's labels (the head's classes unless the checkpoint brings its own).
        dropout: head dropout.
        head: head kind for a fresh head (a ready token classifier keeps its softmax head).
        special_ids: the tokenizer's special token ids.
        aux_from_layer: if > 0, per-layer classifiers on `hidden_states` aux_from_layer .. L-1
            (block outputs up to the last-but-one; the last block feeds the main head).
        new_head: a ready token classifier keeps only its encoder and gets a fresh `head` for
            `labels` (its own classifier and label names are dropped).

    Returns:
        (model, teacher_labels, ready): `ready` is True when the checkpoint already was a token
        classifier used with its own head and label names.
    """
    config = read_hf_config(name_or_path)
    if is_token_classifier(config) and not new_head:
        hf = _from_pretrained(transformers.TFAutoModelForTokenClassification, name_or_path)
        teacher_labels = [config.id2label[i] for i in range(len(config.id2label))]
        if head != "softmax":
            raise ValueError(f"--head={head}: {name_or_path} is a ready token classifier with a "
                             "softmax head, used as is; drop --head, or add --teacher_new_head "
                             "for a new head on its encoder")
        model = TokenClassifier(_main_layer(hf), len(teacher_labels), dropout,
                                classifier=hf.classifier, labels=teacher_labels,
                                special_ids=special_ids, name="teacher")
        return model.build_with_dummy(), teacher_labels, True
    encoder = load_encoder(name_or_path)
    aux_layers = ()
    if aux_from_layer:
        blocks = len(encoder.encoder.layer)
        aux_layers = tuple(range(aux_from_layer, blocks))
        if not aux_layers:
            raise ValueError(
                f"--aux_from_layer={aux_from_layer}: the teacher has {blocks} blocks, so no layer "
                f"from {aux_from_layer} to {blocks - 1} gets a classifier; lower --aux_from_layer")
    model = TokenClassifier(encoder, len(labels), dropout, head=head, labels=labels,
                            special_ids=special_ids, aux_layers=aux_layers, name="teacher")
    return model.build_with_dummy(), list(labels), False


def build_student(
    spec: str,
    teacher: TokenClassifier,
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
) -> TokenClassifier:
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
    if init == "select":
        if not preset:
            raise ValueError(f"--student_init=select needs a preset student (l6-h256, ...), "
                             f"not {spec}")
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
        encoder = _main_layer(transformers.TFBertModel(cfg, add_pooling_layer=False))
    else:
        hub_or_folder = os.path.isdir(spec) or "/" in resolve_student_name(spec)
        if not own_tokenizer and not hub_or_folder:
            raise ValueError(
                f"--student={spec} is not a folder, hub id, short name "
                f"({', '.join(STUDENT_SHORT_NAMES)}), preset like l4-h256 or teacher:0,2,4"
            )
        encoder = load_encoder(resolve_student_name(spec))
        if not own_tokenizer and encoder.config.vocab_size != vocab_size:
            encoder = with_vocab(encoder, vocab_size)
    width = encoder.config.hidden_size
    aux = (stages_lib.msd_layer_pairs(teacher.aux_layers, teacher.num_blocks,
                                      len(encoder.encoder.layer))[0] if msd else ())
    student = TokenClassifier(
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
    elif not cut and not own_tokenizer and embeddings == "teacher":
        teacher_emb = teacher.encoder.embeddings.weight.numpy()
        encoder.embeddings.weight.assign(
            embeddings_lib.compress(teacher_emb, width).astype(np.float32)
        )
    return student


def _selected_encoder(spec: str, teacher: TokenClassifier, vocab_size: int, batches):
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
    encoder = _encoder_from_config(cfg)
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


def max_positions(cfg) -> int:
    """Tokens per sequence a Hugging Face config's position embeddings allow."""
    # RoBERTa-style position ids start after the padding index.
    offset = cfg.pad_token_id + 1 if cfg.model_type in _ROBERTA_LIKE else 0
    return int(cfg.max_position_embeddings) - offset


def check_student(spec: str, teacher: TokenClassifier, max_seq_length: int,
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
    cfg = read_hf_config(name)
    for field in ("hidden_size", "num_attention_heads", "num_hidden_layers"):
        if not hasattr(cfg, field):
            raise ValueError(f"--student={spec}: its config has no {field}; use a BERT, RoBERTa "
                             "or XLM-R checkpoint")
    if cfg.hidden_size % cfg.num_attention_heads:
        raise ValueError(f"--student={spec}: hidden size {cfg.hidden_size} is not divisible by "
                         f"its {cfg.num_attention_heads} attention heads; fix its config.json")
    positions = max_positions(cfg)
    if positions < max_seq_length:
        raise ValueError(f"--max_seq_length={max_seq_length} is longer than the {positions} "
                         f"positions of student {spec}; lower --max_seq_length")
    return int(cfg.num_hidden_layers)


def _encoder_from_config(cfg, pooler: bool = False):
    """A randomly initialised main layer for `cfg` (its variables are made on the first call).

    Without `pooler`, the main layer has none (tagging never uses it), whatever the class's
    default: `TFAutoModel.from_config` only names the main-layer class here, nothing is built.
    """
    main = _main_layer(transformers.TFAutoModel.from_config(cfg))
    return type(main)(cfg, add_pooling_layer=pooler, name=main.name)


def _has_pooler(encoder) -> bool:
    return getattr(encoder, "pooler", None) is not None


def _cut_teacher(teacher: TokenClassifier, layers: list[int]):
    cfg = teacher.encoder.config.__class__.from_dict(teacher.encoder.config.to_dict())
    cfg.num_hidden_layers = len(layers)
    encoder = _encoder_from_config(cfg)
    ids = tf.ones((1, 4), tf.int32)
    encoder(input_ids=ids, attention_mask=ids)
    encoder.embeddings.set_weights(teacher.encoder.embeddings.get_weights())
    for j, i in enumerate(layers):
        encoder.encoder.layer[j].set_weights(teacher.encoder.encoder.layer[i].get_weights())
    return encoder


def with_vocab(encoder, vocab_size: int, overrides: dict | None = None):
    """Returns a copy of `encoder` whose word-embedding matrix has `vocab_size` rows.

    All other weights are copied; the word embeddings are left for the caller to set.
    `overrides` sets config fields of the copy (e.g. a renumbered `pad_token_id`).
    """
    cfg = encoder.config.__class__.from_dict(encoder.config.to_dict())
    cfg.vocab_size = vocab_size
    for field, value in (overrides or {}).items():
        setattr(cfg, field, value)
    new = _encoder_from_config(cfg, pooler=_has_pooler(encoder))
    ids = tf.ones((1, 4), tf.int32)
    new(input_ids=ids, attention_mask=ids)

    # Same architecture but the vocabulary: variables correspond one to one, in order.
    for src, dst in zip(encoder.weights, new.weights, strict=True):
        if src.name.split("/")[-2:] != dst.name.split("/")[-2:]:
            raise ValueError(f"cannot copy {src.name} into {dst.name}")
        if src.shape == dst.shape:
            dst.assign(src)
    return new


def count_params(model: keras.Model) -> int:
    """Parameters used for tagging (the unused pooler and the distillation projection excluded)."""
    groups = model.variable_groups()
    return int(
        sum(int(np.prod(v.shape)) for k, vs in groups.items() if k != "projection" for v in vs)
    )


def embedding_params(model: keras.Model) -> int:
    """Parameters of the word-embedding table alone (vocabulary x width): most of a small
    student on a 250k multilingual vocabulary (see `vocab_trim`)."""
    return int(np.prod(model.encoder.embeddings.weight.shape))


def save_weights(model: TokenClassifier, folder: str, labels: list[str] | None = None,
                 tokenizer=None) -> float:
    """Writes the model's weights (and label names) under `folder` atomically; returns MB.

    Next to the weights go `model.json` (the `TokenClassifier`'s settings), `encoder.json`
    (the encoder's Hugging Face config) and, when given, the tokenizer it reads (`tokenizer/`):
    `load_model` rebuilds the model from the folder alone.
    """
    tmp = folder + ".tmp"
    tf.io.gfile.makedirs(tmp)
    model.save_weights(os.path.join(tmp, "weights"))
    with open(os.path.join(tmp, "model.json"), "w") as f:
        json.dump(model.get_config(), f)
    with open(os.path.join(tmp, ENCODER_FILE), "w") as f:  # enough to rebuild it: `load_model`
        json.dump({"config": model.encoder.config.to_dict(),
                   "pooler": _has_pooler(model.encoder)}, f, indent=1)
    if tokenizer is not None:
        tokenizer.save_pretrained(os.path.join(tmp, TOKENIZER_DIR))
    if labels is not None:
        with open(os.path.join(tmp, "labels.txt"), "w", encoding="utf-8") as f:
            f.write("".join(f"{label}\n" for label in labels))
    if tf.io.gfile.exists(folder):
        tf.io.gfile.rmtree(folder)
    os.replace(tmp, folder)
    return weights_size_mb(folder)


def weights_size_mb(folder: str) -> float:
    """Size on disk of the weight files in `folder`, in MB (10^6 bytes)."""
    total = sum(
        os.path.getsize(os.path.join(folder, f))
        for f in os.listdir(folder)
        if f.startswith("weights")
    )
    return total / 1e6


def check_compatible(model: TokenClassifier, folder: str, labels: list[str]) -> None:
    """Fails unless `folder` (from `save_weights`) holds weights for this model and these labels.

    Used before reusing another run's fine-tuned teacher (`--teacher_checkpoint`).
    """
    config_path = os.path.join(folder, "model.json")
    if not os.path.exists(config_path):
        raise ValueError(f"{folder}: no model.json; give the teacher/ folder of an earlier run "
                         "(<output_dir>/teacher)")
    with open(config_path, encoding="utf-8") as f:
        saved = json.load(f)
    mine = json.loads(json.dumps(model.get_config()))
    differ = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
    if differ:
        theirs = ", ".join(f"{k}={saved.get(k)}" for k in differ)
        ours = ", ".join(f"{k}={mine.get(k)}" for k in differ)
        raise ValueError(
            f"{config_path}: saved for another model ({theirs}; here {ours}); use the same "
            "--teacher, --head and --aux_heads as the run that wrote it")
    labels_path = os.path.join(folder, "labels.txt")
    if os.path.exists(labels_path):
        with open(labels_path, encoding="utf-8") as f:
            saved_labels = f.read().split()
        if saved_labels != list(labels):
            raise ValueError(
                f"{labels_path}: its labels {' '.join(saved_labels)} differ from this data's "
                f"{' '.join(labels)}; use training files with the same labels")


def load_weights(model: TokenClassifier, folder: str) -> None:
    """Restores weights written by `save_weights` into an identically built model.

    Raises:
        ValueError: a variable of the model has no value there (written by other code or
            another architecture) — never continue with half-random weights.
    """
    status = model.load_weights(os.path.join(folder, "weights"))
    try:
        status.assert_existing_objects_matched()
    except AssertionError as e:
        missing = re.findall(r"<tf.Variable '([^']+)'", str(e))
        raise ValueError(
            f"{folder}: the checkpoint has no values for {', '.join(missing[:3]) or 'some'} "
            "variables of this model; it was written by another version of xtremedistil_tf or "
            "with other settings: rerun the training, or use a new --output_dir") from None
    status.expect_partial()


def load_model(folder: str, name: str | None = None) -> tuple[TokenClassifier, list[str]]:
    """Rebuilds the model that `save_weights` wrote to `folder`, with its weights and labels.

    Needs nothing but the folder: no teacher, no data, no hub (its tokenizer, if saved, is
    `load_tokenizer(os.path.join(folder, TOKENIZER_DIR))`). `name` defaults to the folder's
    name (`teacher`, `student`).
    """
    needed = ("model.json", ENCODER_FILE, "labels.txt")
    missing = [f for f in needed if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise ValueError(f"{folder}: no {', '.join(missing)}; give a teacher/ or student/ "
                         "folder of a finished run (older versions did not write "
                         f"{ENCODER_FILE}: rerun the training there)")
    with open(os.path.join(folder, "model.json"), encoding="utf-8") as f:
        settings = json.load(f)
    with open(os.path.join(folder, ENCODER_FILE), encoding="utf-8") as f:
        saved = json.load(f)
    with open(os.path.join(folder, "labels.txt"), encoding="utf-8") as f:
        labels = [line.rstrip("\n") for line in f if line.strip()]
    config = dict(saved["config"])
    hf_config = transformers.AutoConfig.for_model(config.pop("model_type"), **config)
    encoder = _encoder_from_config(hf_config, pooler=saved["pooler"])
    model = TokenClassifier(
        encoder, settings["num_labels"], settings["dropout"],
        projection_dim=settings["projection_dim"], head=settings["head"], labels=labels,
        special_ids=settings["special_ids"], aux_layers=settings["aux_layers"],
        name=name or os.path.basename(os.path.normpath(folder))).build_with_dummy()
    if model.num_labels != len(labels):
        raise ValueError(f"{folder}: labels.txt has {len(labels)} labels but the model "
                         f"{model.num_labels}; was the folder edited?")
    load_weights(model, folder)
    return model, labels
