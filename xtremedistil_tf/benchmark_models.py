"""What the benchmark times and measures against: architecture-shaped presets (random weights,
offline) or local folders as `TokenClassifier`s, the analytic FLOPs of a BERT-style tagger, the
machine's matmul peak, and the process's memory.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import resource
import time

import numpy as np

import xtremedistil_tf  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
import tensorflow as tf

NUM_LABELS = 9  # CoNLL/WikiANN-style IOB2 tag set: O + B/I of PER, ORG, LOC, MISC

# Architecture-shaped presets (random weights). Sizes follow the hub configs:
# bert-base-multilingual-cased, xlm-roberta-base, microsoft/xtremedistil-l*-h*-uncased.
PRESETS = {
    "mbert-base": ("bert", dict(vocab_size=119547, hidden_size=768, num_hidden_layers=12,
                                num_attention_heads=12, intermediate_size=3072)),
    "xlmr-base": ("xlm-roberta", dict(vocab_size=250002, hidden_size=768, num_hidden_layers=12,
                                      num_attention_heads=12, intermediate_size=3072,
                                      max_position_embeddings=514, type_vocab_size=1,
                                      pad_token_id=1, bos_token_id=0, eos_token_id=2)),
    "xtremedistil-l6-h256": ("bert", dict(vocab_size=30522, hidden_size=256, num_hidden_layers=6,
                                          num_attention_heads=8, intermediate_size=1024)),
    # The l6-h256 student with the 250k XLM-R / multilingual-e5 vocabulary: a student that
    # keeps its multilingual teacher's tokenizer (--student_own_tokenizer off).
    "xtremedistil-l6-h256-v250k": ("bert", dict(vocab_size=250002, hidden_size=256,
                                                num_hidden_layers=6, num_attention_heads=8,
                                                intermediate_size=1024)),
    "xtremedistil-l6-h384": ("bert", dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6,
                                          num_attention_heads=12, intermediate_size=1536)),
    "xtremedistil-l12-h384": ("bert", dict(vocab_size=30522, hidden_size=384,
                                           num_hidden_layers=12, num_attention_heads=12,
                                           intermediate_size=1536)),
}


def flops_per_token(num_layers: int, hidden: int, intermediate: int, seq_length: int,
                    num_labels: int = NUM_LABELS) -> float:
    """Analytic forward FLOPs per token of a BERT-style tagger (1 multiply-add = 2 FLOPs).

    Per layer: the Q, K, V and output projections (4·H² multiply-adds), the feed-forward
    (2·H·I), and attention scores QKᵀ plus the weighted sum over values (2·T·H), so
    `L · (2·(4·H² + 2·H·I) + 2·2·T·H)`, plus the classifier `2·H·K`. Embedding lookups,
    layer norms, softmax, GELU and biases are excluded (lower-order terms).
    """
    per_layer = 2 * (4 * hidden**2 + 2 * hidden * intermediate) + 2 * 2 * seq_length * hidden
    return float(num_layers * per_layer + 2 * hidden * num_labels)


def mfu(tokens_per_s: float, gflops_per_token: float, peak_gflops: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s (tokens/s × FLOPs/token) over the peak."""
    return tokens_per_s * gflops_per_token / peak_gflops if peak_gflops > 0 else float("nan")


def summarise_times(times_ms: list[float], batch_size: int, seq_length: int) -> dict:
    """p50/p95 ms per batch and the throughput implied by the p50."""
    p50, p95 = (float(v) for v in np.percentile(times_ms, [50, 95]))
    return {
        "ms_per_batch_p50": p50,
        "ms_per_batch_p95": p95,
        "sentences_per_s": batch_size / (p50 / 1000),
        "tokens_per_s": batch_size * seq_length / (p50 / 1000),
    }


def measure_peak_gflops(dtype: str, n: int = 2048, repeats: int = 10) -> float:
    """Best n×n×n matmul rate of this machine in GFLOP/s (2·n³ FLOPs per call), `tf.function`."""
    tf_dtype = tf.bfloat16 if dtype == "bfloat16" else tf.float32
    rng = np.random.default_rng(0)
    a = tf.cast(rng.standard_normal((n, n), dtype=np.float32), tf_dtype)
    b = tf.cast(rng.standard_normal((n, n), dtype=np.float32), tf_dtype)
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.cast(tf.matmul(x, y)[:1, :1], tf.float32)))
    matmul(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        matmul(a, b).numpy()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def rss_mb() -> tuple[float, float]:
    """(current VmRSS, process high-water mark) in MB (10^6 bytes)."""
    current = float("nan")
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    current = int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6  # KiB on Linux
    return current, peak


def release_memory() -> None:
    """Gives back what models, callables and optimizers no longer referenced still hold.

    Keras layers, `tf.function`s and their traced concrete functions, and optimizers reference
    each other in cycles, so only the cyclic garbage collector frees them (and with them the
    tensors behind their variables); `clear_session` drops Keras' global graph state; and glibc
    keeps freed heap pages in the process until `malloc_trim` returns them to the system.
    Without this a benchmark's resident set grows with every model and mode it has timed.
    """
    tf.keras.backend.clear_session()
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# --------------------------------------------------------------------------- models


def build_model(name: str, projection_dim: int | None = None):
    """A `TokenClassifier` (9-label softmax head, no dropout) for a preset or a local folder.

    Built under whatever Keras dtype policy is active, so set `mixed_bfloat16` first for bf16.
    `projection_dim` adds the student's projection to a teacher's width (representations stage).
    """
    import transformers

    from xtremedistil_tf import models

    if name in PRESETS:
        kind, kwargs = PRESETS[name]
        cfg = transformers.AutoConfig.for_model(kind, **kwargs)
        hf = transformers.TFAutoModel.from_config(cfg, add_pooling_layer=False)
        encoder = models.main_layer(hf)
    else:
        encoder = models.load_encoder(name)
    label = os.path.basename(os.path.normpath(name)) if name not in PRESETS else name
    return models.TokenClassifier(encoder, NUM_LABELS, dropout=0.0, head="softmax",
                                  projection_dim=projection_dim,
                                  name=label.replace("-", "_")).build_with_dummy()


def hidden_size(name: str) -> int:
    """Width of a preset or local folder's encoder, read from its config."""
    from xtremedistil_tf import models

    if name in PRESETS:
        return PRESETS[name][1]["hidden_size"]
    return int(models.read_hf_config(name).hidden_size)


def model_flops_per_token(model, seq_length: int) -> float:
    cfg = model.encoder.config
    return flops_per_token(cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size,
                           seq_length, model.num_labels)
