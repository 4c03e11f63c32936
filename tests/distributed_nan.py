"""A NaN batch under MirroredStrategy with skip_nonfinite: skipped on both replicas.

Run by test_distribute.py in a fresh process (logical devices must be set before TensorFlow
starts).
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import xtremedistil_tf  # noqa: E402,F401
from xtremedistil_tf import distribute  # noqa: E402

strategy = distribute.make_strategy("mirrored", cpu_devices=2)

import numpy as np  # noqa: E402

from conftest import MODELS  # noqa: E402
from xtremedistil_tf import data, features, models, stages, train  # noqa: E402

tok = models.load_tokenizer(os.path.join(MODELS, "tiny_bert"))
sentences = [data.Sentence(("John", "visited", "London"), ("B-X", "O", "B-X"))] * 4
windows = features.make_windows(sentences, tok, {"O": 0, "B-X": 1, "I-X": 2}, 32)
nan = {"teacher_logits": [np.full((3, 3), np.nan, np.float32) for _ in windows]}
batches = features.make_batches(windows, 4, 32, 0, nan)
with strategy.scope():
    teacher, _, _ = models.build_teacher(os.path.join(MODELS, "tiny_bert"), ["O", "B-X", "I-X"],
                                         0.0)
before = [v.numpy().copy() for v in teacher.head.trainable_variables]
stage = stages.Stage("logits", "logits", "transfer", ("head",), 1e-2, 1, 1, "dev_f1")
result = train.run_stage(teacher, stage, lambda epoch: batches, lambda: 0.0,
                         loop=train.LoopConfig(verbose=False, distribution=strategy,
                                               skip_nonfinite=2))
change = max(float(np.abs(b - v.numpy()).max())
             for b, v in zip(before, teacher.head.trainable_variables))
assert len(result.history) == 1 and change < 1e-4, change  # only AdamW's weight decay moved
print("skipped on all replicas")
