"""Encoders, the token classifier that wraps them, and the teacher (students: `students`;
saving and rebuilding from a folder: `model_folders`).

Every model here is a `TokenClassifier`: a Hugging Face TF *main layer* (`TFBertMainLayer`,
`TFXLMRobertaMainLayer`, ...) plus dropout and a dense head, returning a dict with `logits` and,
when asked, `hidden_states`. Variables are grouped (`embeddings`, `block:i`, `head`,
`projection`) so distillation stages can say which of them train.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import transformers

from xtremedistil_tf import (
    heads as heads_lib,
    precision,
)

keras = tf.keras
# Dropout layers draw from `tf.random.Generator`s (instead of stateful random ops whose state
# lives in the kernel), so training can set each layer's stream from (seed, step): a stage
# resumed from a checkpoint draws the dropout masks an uninterrupted one would
# (`train.dropout_generators`). Must be set before any layer is built.
keras.backend.experimental.enable_tf_random_generator()

_ROBERTA_LIKE = ("roberta", "xlm-roberta", "camembert")


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
            `aux_logits`, a list of `[B, T, K]` in `aux_layers` order), float32 also when the
            model computes in a mixed-precision policy (losses and decoding read float32).
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
        return precision.float32(result)

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
        """Maps `[..., H_student]` to the teacher width (identity without a projection);
        float32."""
        return precision.float32(self.projection(hidden) if self.projection is not None
                                 else hidden)

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


def main_layer(hf_model):
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
    return main_layer(hf)


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
        model = TokenClassifier(main_layer(hf), len(teacher_labels), dropout,
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


def max_positions(cfg) -> int:
    """Tokens per sequence a Hugging Face config's position embeddings allow."""
    # RoBERTa-style position ids start after the padding index.
    offset = cfg.pad_token_id + 1 if cfg.model_type in _ROBERTA_LIKE else 0
    return int(cfg.max_position_embeddings) - offset


def encoder_from_config(cfg, pooler: bool = False):
    """A randomly initialised main layer for `cfg` (its variables are made on the first call).

    Without `pooler`, the main layer has none (tagging never uses it), whatever the class's
    default: `TFAutoModel.from_config` only names the main-layer class here, nothing is built.
    """
    main = main_layer(transformers.TFAutoModel.from_config(cfg))
    return type(main)(cfg, add_pooling_layer=pooler, name=main.name)


def has_pooler(encoder) -> bool:
    return getattr(encoder, "pooler", None) is not None


def with_vocab(encoder, vocab_size: int, overrides: dict | None = None):
    """Returns a copy of `encoder` whose word-embedding matrix has `vocab_size` rows.

    All other weights are copied; the word embeddings are left for the caller to set.
    `overrides` sets config fields of the copy (e.g. a renumbered `pad_token_id`).
    """
    cfg = encoder.config.__class__.from_dict(encoder.config.to_dict())
    cfg.vocab_size = vocab_size
    for field, value in (overrides or {}).items():
        setattr(cfg, field, value)
    new = encoder_from_config(cfg, pooler=has_pooler(encoder))
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
