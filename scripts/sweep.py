"""Runs run_distil.py once per point of a grid of flag values: see `xtremedistil_tf/sweep.py`.

    python scripts/sweep.py --flagfile flags/base.cfg --grid 'learning_rate=1e-5,3e-5' \
        --output_dir runs/sweep_lr [--parallel 2] [-- --train_file=train.conll ...]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from xtremedistil_tf import sweep  # noqa: E402

if __name__ == "__main__":
    sys.exit(sweep.main())
