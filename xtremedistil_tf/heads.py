"""Tagging heads on top of an encoder: softmax, CRF, and self-attention before either.

A head maps encoder outputs `[B, T, H]` to emission scores `[B, T, K]` (the `logits` every loss and
distillation stage uses), and knows how to turn them into a loss, label ids and probabilities.
CRF heads run the chain over every real sub-word (padding and special tokens masked out), so the
exported model decodes exactly as it was trained without needing to know where words start;
training labels continuation sub-words of an entity with its `I-` tag.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from xtremedistil_tf import crf_layer, losses

keras = tf.keras
HEADS = ("softmax", "crf", "attention_softmax", "attention_crf")


class TaggingHead(keras.layers.Layer):
    """Dropout, optional self-attention block, a dense classifier and an optional CRF.

    Args:
        kind: one of `HEADS`.
        num_labels: K.
        hidden_size: width of the encoder outputs (the attention block keeps it).
        dropout: dropout rate (before the classifier, and inside the attention block).
        attention_heads: heads of the self-attention block (attention kinds only).
        labels: label names; with a CRF, impossible IOB2 transitions are forbidden at decoding.
        classifier: an existing dense classifier to reuse (ready token-classification models).
    """

    def __init__(self, kind="softmax", num_labels=2, hidden_size=768, dropout=0.1,
                 attention_heads=4, labels=None, classifier=None, **kwargs):
        super().__init__(**kwargs)
        if kind not in HEADS:
            raise ValueError(f"--head={kind} is unknown; use one of {', '.join(HEADS)}")
        self.kind = kind
        self.num_labels = num_labels
        self.hidden_size = hidden_size
        self.dropout_rate = dropout
        self.attention_heads = attention_heads
        self.labels = list(labels) if labels is not None else None
        self.dropout = keras.layers.Dropout(dropout)
        self.attention = None
        if kind.startswith("attention"):
            self.attention = keras.layers.MultiHeadAttention(
                attention_heads, key_dim=max(1, hidden_size // attention_heads), dropout=dropout,
                name="attention")
            self.attention_norm = keras.layers.LayerNormalization(epsilon=1e-12,
                                                                  name="attention_norm")
        self.classifier = classifier or keras.layers.Dense(
            num_labels, kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            name="classifier")
        self.crf = None
        if kind.endswith("crf"):
            allowed, start = crf_layer.iob2_allowed(self.labels) if self.labels else (None, None)
            self.crf = crf_layer.CRF(num_labels, allowed_transitions=allowed, allowed_start=start,
                                   name="crf")

    def call(self, sequence, attention_mask, training=False):
        """Emission scores `[B, T, K]` from encoder outputs `[B, T, H]` and `[B, T]` mask."""
        x = sequence
        if self.attention is not None:
            mask = tf.cast(attention_mask, tf.bool)
            attended = self.attention(x, x, attention_mask=tf.expand_dims(mask, 1),
                                      training=training)
            x = self.attention_norm(x + self.dropout(attended, training=training))
        emissions = self.classifier(self.dropout(x, training=training))
        if self.crf is not None:
            emissions = self.crf(emissions)
        return emissions

    def loss(self, emissions, labels, token_mask, first_subword, label_all_subwords=False,
             class_weights=None):
        """Training loss of gold `labels` `[B, T]` (negative ids are ignored).

        Softmax heads: cross-entropy over first sub-words (all sub-words with
        `label_all_subwords`), each position scaled by its label's `class_weights` (`[K]`,
        optional). CRF heads: negative log-likelihood of the chain over all real sub-words
        (`token_mask`), per labelled sub-word.
        """
        valid = labels >= 0
        if self.crf is None:
            mask = valid if label_all_subwords else valid & (first_subword > 0)
            return losses.cross_entropy(emissions, labels, mask, class_weights)
        if class_weights is not None:
            raise ValueError("class weights (--o_weight) apply to softmax heads; a CRF scores "
                             "whole tag sequences: drop --o_weight or use a softmax head")
        mask = tf.cast(token_mask, tf.bool) & valid
        nll = -self.crf.log_likelihood(emissions, labels, mask)
        return tf.math.divide_no_nan(tf.reduce_sum(nll), tf.reduce_sum(tf.cast(mask, nll.dtype)))

    def decode(self, emissions, token_mask):
        """Label ids `[B, T]` int32: Viterbi over real sub-words for CRF heads, else argmax."""
        argmax = tf.argmax(emissions, axis=-1, output_type=tf.int32)
        if self.crf is None:
            return argmax
        path, _ = self.crf.decode(emissions, token_mask)
        return tf.where(tf.cast(token_mask, tf.bool), path, argmax)

    def probabilities(self, emissions, token_mask):
        """`[B, T, K]`: softmax of emissions; for CRF heads the chain's posterior marginals at
        real sub-words (softmax of emissions at padding and special tokens)."""
        soft = tf.nn.softmax(tf.cast(emissions, tf.float32), axis=-1)
        if self.crf is None:
            return soft
        marginals = tf.cast(self.crf.marginals(emissions, token_mask), tf.float32)
        return tf.where(tf.expand_dims(tf.cast(token_mask, tf.bool), -1), marginals, soft)

    def set_prior_bias(self, counts) -> None:
        """Starts the classifier at the labels' prior: bias = log frequency (add-one smoothed).

        A zero bias makes an untrained head predict every label equally, and the first hundred
        steps go to learning that most tokens are O; from the prior, they go to the features.
        """
        counts = np.asarray(counts, np.float64) + 1.0
        if counts.shape != (self.num_labels,):
            raise ValueError(f"label counts have shape {counts.shape}, the head has "
                             f"{self.num_labels} labels")
        self.classifier.bias.assign(np.log(counts / counts.sum()).astype(np.float32))

    def get_config(self):
        config = super().get_config()
        config.update(kind=self.kind, num_labels=self.num_labels, hidden_size=self.hidden_size,
                      dropout=self.dropout_rate,
                      attention_heads=self.attention_heads, labels=self.labels)
        return config
