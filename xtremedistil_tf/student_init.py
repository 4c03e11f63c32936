"""Students initialised from the teacher's weights: weight selection.

Xu et al., ICLR 2024 ("Initializing Models with Larger Ones") start a small model from a subset
of a larger one's weights. For a BERT-like teacher (BERT, RoBERTa, XLM-R) and a student of
`blocks` layers and width `hidden` (`--student_init=select`):

- **Layers**: evenly spaced teacher blocks, first and last included (`select_layers`).
- **Residual stream**: one subset of `hidden` of the teacher's dimensions, used alike in every
  weight that reads or writes the residual stream — word, position and type embeddings, every
  LayerNorm, attention input and output, FFN input and output, the classifier's input. We keep
  the dimensions with the largest variance of the teacher's hidden states on the transfer text
  (every layer's output, real tokens only). BERT-like models carry a few outlier dimensions of
  very large magnitude that LayerNorm and attention depend on; variance keeps them.
- **Attention heads**: whole heads (so the student's head size is the teacher's), per layer the
  `hidden / head_size` heads whose output contributes most: importance of head h in block l is
  the mean over real tokens of ||ctx_h · W_O[h]||, the norm of what that head adds to the
  residual stream before the output bias (the "attention output norm" of Kobayashi et al.,
  EMNLP 2020).
- **FFN neurons**: per layer the `intermediate` neurons with the largest mean contribution
  |act_j| · ||W_2[j]|| to the block output.

Importances are measured with the fine-tuned teacher on a sample of the transfer text, by
recomputing each block from its weights and its input; the recomputation is checked against
the model's own block output, so an encoder whose blocks differ from BERT's fails loudly
instead of being cut wrongly. The classifier keeps the selected input rows, and the
distillation projection starts as the map back to the selected teacher dimensions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

import numpy as np
import tensorflow as tf
from transformers import activations_tf

INITS = ("random", "select")


@dataclasses.dataclass(frozen=True)
class Importance:
    """What `measure` found, teacher-sized.

    Attributes:
        dims: `[H]` variance of each residual-stream dimension.
        heads: `[L, n_heads]` mean output norm of each attention head.
        neurons: `[L, I]` mean contribution of each FFN neuron.
        tokens: real tokens measured.
    """

    dims: np.ndarray
    heads: np.ndarray
    neurons: np.ndarray
    tokens: int


def check_select(teacher_config, blocks: int, hidden: int, intermediate: int) -> int:
    """Fails with one line unless the teacher can give a `blocks` x `hidden` student; returns
    the student's attention heads (the teacher's head size is kept)."""
    t_hidden, t_heads = teacher_config.hidden_size, teacher_config.num_attention_heads
    head_size = t_hidden // t_heads
    t_blocks, t_inter = teacher_config.num_hidden_layers, teacher_config.intermediate_size
    shape = f"{blocks} blocks x {hidden} wide"
    if blocks > t_blocks:
        raise ValueError(f"--student_init=select: a student of {shape} needs at least {blocks} "
                         f"teacher blocks, the teacher has {t_blocks}; use fewer blocks")
    if hidden > t_hidden or hidden % head_size:
        raise ValueError(f"--student_init=select: student width {hidden} must be at most the "
                         f"teacher's {t_hidden} and a multiple of its head size {head_size} "
                         f"(e.g. {max(head_size, hidden // head_size * head_size)}); change "
                         "the preset's width")
    if intermediate > t_inter:
        raise ValueError(f"--student_init=select: the student's FFN ({intermediate}) is wider "
                         f"than the teacher's ({t_inter}); use a narrower student")
    return hidden // head_size


def select_layers(teacher_blocks: int, blocks: int) -> list[int]:
    """Evenly spaced teacher blocks, first and last included (one block: the last)."""
    if blocks == 1:
        return [teacher_blocks - 1]
    return [int(round(i * (teacher_blocks - 1) / (blocks - 1))) for i in range(blocks)]


def _layer_norm(x, ln):
    mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
    return (x - mean) * tf.math.rsqrt(var + ln.epsilon) * ln.gamma + ln.beta


def _block_parts(block):
    att = block.attention
    return (att.self_attention, att.dense_output, block.intermediate, block.bert_output)


def _recompute(block, h, mask, act, n_heads):
    """Recomputes one BERT block on `h` `[B,T,H]`; returns (output, head norms `[B,T,n]`,
    neuron contributions `[B,T,I]`)."""
    sa, so, inter, out = _block_parts(block)
    b, t, width = h.shape[0], tf.shape(h)[1], h.shape[-1]
    d = width // n_heads

    def heads(x):
        return tf.transpose(tf.reshape(x, [b, t, n_heads, d]), [0, 2, 1, 3])

    q, k, v = (heads(layer(h)) for layer in (sa.query, sa.key, sa.value))
    scores = tf.matmul(q, k, transpose_b=True) / math.sqrt(d)
    scores += (1.0 - tf.cast(mask, scores.dtype))[:, None, None, :] * -1e9
    ctx = tf.matmul(tf.nn.softmax(scores, -1), v)  # [B, n, T, d]
    w_o = tf.reshape(so.dense.kernel, [n_heads, d, width])
    per_head = tf.einsum("bntd,ndh->btnh", ctx, w_o)
    attn = tf.reduce_sum(per_head, 2) + so.dense.bias
    a = _layer_norm(attn + h, so.LayerNorm)
    mid = act(inter.dense(a))
    contrib = tf.abs(mid) * tf.norm(out.dense.kernel, axis=1)
    result = _layer_norm(out.dense(mid) + a, out.LayerNorm)
    return result, tf.norm(per_head, axis=-1), contrib


def measure(encoder, batches: Iterable[dict]) -> Importance:
    """Measures `Importance` of a Hugging Face BERT-like main layer on `batches` (dicts with
    `input_ids` and `attention_mask`).

    Raises:
        ValueError: the recomputed blocks do not match the encoder's (not a BERT-style block).
    """
    cfg = encoder.config
    n_heads = cfg.num_attention_heads
    act = activations_tf.get_tf_activation(cfg.hidden_act)
    blocks = encoder.encoder.layer
    dims_sum = np.zeros(cfg.hidden_size)
    dims_sq = np.zeros(cfg.hidden_size)
    heads = np.zeros((len(blocks), n_heads))
    neurons = np.zeros((len(blocks), cfg.intermediate_size))
    tokens = 0
    for batch in batches:
        mask = tf.constant(batch["attention_mask"])
        out = encoder(input_ids=tf.constant(batch["input_ids"]), attention_mask=mask,
                      output_hidden_states=True, training=False)
        real = tf.cast(mask, tf.bool)
        n = int(tf.reduce_sum(tf.cast(real, tf.int32)))
        for i, block in enumerate(blocks):
            h = out.hidden_states[i]
            result, head_norm, contrib = _recompute(block, h, mask, act, n_heads)
            want = tf.boolean_mask(out.hidden_states[i + 1], real)
            got = tf.boolean_mask(result, real)
            err = float(tf.reduce_max(tf.abs(want - got)))
            scale = float(tf.reduce_max(tf.abs(want)))
            if not err <= 1e-3 * max(scale, 1.0):
                raise ValueError(f"--student_init=select: block {i} of {cfg.model_type} is not "
                                 f"a BERT-style block (recomputed output differs by {err:.3g}); "
                                 "use --student_init=random")
            heads[i] += tf.reduce_sum(tf.boolean_mask(head_norm, real), 0).numpy()
            neurons[i] += tf.reduce_sum(tf.boolean_mask(contrib, real), 0).numpy()
        for h in out.hidden_states:
            x = tf.boolean_mask(h, real).numpy().astype(np.float64)
            dims_sum += x.sum(0)
            dims_sq += (x * x).sum(0)
        tokens += n
    if not tokens:
        raise ValueError("--student_init=select: no text to measure the teacher on")
    count = tokens * (len(blocks) + 1)
    mean = dims_sum / count
    return Importance(dims=dims_sq / count - mean * mean, heads=heads / tokens,
                      neurons=neurons / tokens, tokens=tokens)


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, in increasing index order (ties: lower index)."""
    order = np.argsort(-scores, kind="stable")[:k]
    return np.sort(order)


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which teacher parts a student keeps: `layers`, residual `dims`, per kept layer the
    `heads` and FFN `neurons` (teacher indices)."""

    layers: list[int]
    dims: np.ndarray
    heads: list[np.ndarray]
    neurons: list[np.ndarray]


def choose(importance: Importance, teacher_blocks: int, blocks: int, hidden: int,
           n_heads: int, intermediate: int) -> Selection:
    layers = select_layers(teacher_blocks, blocks)
    return Selection(
        layers=layers,
        dims=_top(importance.dims, hidden),
        heads=[_top(importance.heads[i], n_heads) for i in layers],
        neurons=[_top(importance.neurons[i], intermediate) for i in layers])


def _assign(variable, value) -> None:
    if tuple(variable.shape) != value.shape:
        raise ValueError(f"weight selection: {variable.name} is {tuple(variable.shape)}, "
                         f"selected {value.shape}")
    variable.assign(value.astype(variable.dtype.as_numpy_dtype))


def apply(student_encoder, teacher_encoder, sel: Selection, head_size: int) -> None:
    """Copies the selected teacher weights into a student encoder of the matching shape."""
    dims = sel.dims
    for mine, theirs in zip(student_encoder.embeddings.weights,
                            teacher_encoder.embeddings.weights, strict=True):
        value = theirs.numpy()[..., dims]  # every embedding table and its LayerNorm: last axis
        if value.ndim == 2 and value.shape[0] > mine.shape[0]:  # a shorter position table
            value = value[:mine.shape[0]]
        _assign(mine, value)
    for j, i in enumerate(sel.layers):
        cols = (sel.heads[j][:, None] * head_size + np.arange(head_size)).reshape(-1)
        s_parts, t_parts = (_block_parts(student_encoder.encoder.layer[j]),
                            _block_parts(teacher_encoder.encoder.layer[i]))
        (s_sa, s_so, s_in, s_out), (t_sa, t_so, t_in, t_out) = s_parts, t_parts
        for name in ("query", "key", "value"):
            mine, theirs = getattr(s_sa, name), getattr(t_sa, name)
            _assign(mine.kernel, theirs.kernel.numpy()[np.ix_(dims, cols)])
            _assign(mine.bias, theirs.bias.numpy()[cols])
        _assign(s_so.dense.kernel, t_so.dense.kernel.numpy()[np.ix_(cols, dims)])
        _assign(s_so.dense.bias, t_so.dense.bias.numpy()[dims])
        neurons = sel.neurons[j]
        _assign(s_in.dense.kernel, t_in.dense.kernel.numpy()[np.ix_(dims, neurons)])
        _assign(s_in.dense.bias, t_in.dense.bias.numpy()[neurons])
        _assign(s_out.dense.kernel, t_out.dense.kernel.numpy()[np.ix_(neurons, dims)])
        _assign(s_out.dense.bias, t_out.dense.bias.numpy()[dims])
        for s_ln, t_ln in ((s_so.LayerNorm, t_so.LayerNorm), (s_out.LayerNorm, t_out.LayerNorm)):
            _assign(s_ln.gamma, t_ln.gamma.numpy()[dims])
            _assign(s_ln.beta, t_ln.beta.numpy()[dims])


def apply_head(student, teacher, dims: np.ndarray) -> bool:
    """Starts the student's classifier from the teacher's (selected input rows) and its
    distillation projection as the map back to the selected teacher dimensions. Returns
    whether the classifier was copied (plain softmax heads of the same labels, in the same
    order, only: a ready teacher's own label set is not ours)."""
    if student.projection is not None:
        kernel = np.zeros(tuple(student.projection.kernel.shape), np.float32)
        kernel[np.arange(len(dims)), dims] = 1.0
        student.projection.kernel.assign(kernel)
        student.projection.bias.assign(tf.zeros_like(student.projection.bias))
    s_head, t_head = student.head, teacher.head
    if (s_head.attention is not None or t_head.attention is not None
            or tuple(s_head.classifier.bias.shape) != tuple(t_head.classifier.bias.shape)
            or (s_head.labels and t_head.labels and s_head.labels != t_head.labels)):
        return False
    _assign(s_head.classifier.kernel, t_head.classifier.kernel.numpy()[dims])
    _assign(s_head.classifier.bias, t_head.classifier.bias.numpy())
    return True
