"""Runs several `run_distil.py` command lines in one process (tests/test_malformed.py).

    python tests/run_cases.py CASES.json  ->  prints one JSON line: [{"rc", "stderr"}, ...]

Each case is a list of flags. Loading TensorFlow once keeps a table of bad inputs fast.
"""

import contextlib
import io
import json
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import run_distil  # noqa: E402  (defines the flags)
from absl import flags  # noqa: E402

FLAGS = flags.FLAGS


def main():
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    results = []
    for argv in cases:
        FLAGS.unparse_flags()
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                FLAGS(["run_distil.py", *argv])
                rc = run_distil.main(["run_distil.py"])
            except BaseException:  # noqa: BLE001  (a traceback is exactly what the test looks for)
                traceback.print_exc()
                rc = "exception"
        results.append({"rc": rc, "stderr": err.getvalue()})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
