"""One training stage of a tiny dropout-free tagger, single-device or under tf.distribute.

Used by test_distribute.py (run as a script, in fresh processes):
    python tests/distributed_worker.py single OUT.json INIT.npz      (writes INIT.npz)
    python tests/distributed_worker.py mirrored OUT.json INIT.npz    (2 logical CPU devices)
    FUSED_MIN_SIZE=1 python tests/distributed_worker.py ...          (every variable fused)
    TF_CONFIG=... python tests/distributed_worker.py multi_worker OUT.json INIT.npz CKPT_DIR
Writes the per-epoch training losses and every final weight (per variable, flattened) to OUT.json.
"""

import contextlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import xtremedistil_tf  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow)

mode, out_path, init_path = sys.argv[1:4]
ckpt_dir = sys.argv[4] if len(sys.argv) > 4 else None

from xtremedistil_tf import distribute  # noqa: E402

strategy = distribute.make_strategy(
    {"single": "default"}.get(mode, mode), cpu_devices=2)  # first, before any other op

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import transformers  # noqa: E402

from conftest import MODELS, fixture_path  # noqa: E402
from xtremedistil_tf import adamw, data, features, labels as labels_lib, models, stages, train  # noqa

adamw.FUSED_MIN_SIZE = int(os.environ.get("FUSED_MIN_SIZE", adamw.FUSED_MIN_SIZE))

transformers.logging.set_verbosity_error()
tok = models.load_tokenizer(os.path.join(MODELS, "tiny_bert"))
sentences = data.read_conll(fixture_path("tiny_train.conll"))
labels = labels_lib.label_list(sentences)
windows = features.make_windows(sentences, tok, {x: i for i, x in enumerate(labels)}, 32)
batches = features.make_batches(windows, 4, 32, tok.pad_token_id, shuffle=True, seed=3)


def build():
    cfg = transformers.BertConfig(vocab_size=185, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    encoder = models.main_layer(transformers.TFBertModel(cfg, add_pooling_layer=False))
    return models.TokenClassifier(encoder, len(labels), 0.0, labels=labels).build_with_dummy()


tf.keras.utils.set_random_seed(1)
with strategy.scope() if strategy else contextlib.nullcontext():
    model = build()
if mode == "single":
    np.savez(init_path, *model.get_weights())
else:
    saved = np.load(init_path)
    model.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])
stage = stages.Stage("labels", "labels", "train", tuple(model.variable_groups()), 1e-2, 3, 5,
                     "dev_f1")
result = train.run_stage(model, stage, lambda epoch: batches, lambda: 0.0,
                         loop=train.LoopConfig(verbose=False, distribution=strategy),
                         checkpoint_dir=ckpt_dir)
with open(out_path, "w") as f:
    json.dump({"losses": [row["train_loss"] for row in result.history],
               "weights": [w.ravel().tolist() for w in model.get_weights()],
               "replicas": distribute.replicas(strategy),
               "chief": distribute.is_chief(strategy)}, f)
