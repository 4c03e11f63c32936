"""Fine-tune a teacher, distil a student in stages, evaluate both and export the student.

    python run_distil.py                                   # the embedded default (offline-ready)
    python run_distil.py --flagfile=flags/smoke.cfg        # seconds, tiny random models
    python run_distil.py --teacher jplu/tf-xlm-r-ner-40-lang --student xtremedistil-l6-h256 \
        --train_file train.conll --dev_file dev.conll --test_file test.conll

Rerunning the same command resumes after the last finished stage.
"""

import os
import sys

import xtremedistil_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from absl import app

from xtremedistil_tf import flags as xflags, startup


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    # TensorFlow's start-up lines are noise unless --verbosity=1 (or -v 1) asks for them.
    startup.quiet_tensorflow(startup.absl_verbosity())
    print(startup.cpu_line(), file=sys.stderr)
    import transformers

    transformers.logging.set_verbosity_error()  # load reports are noise; our log says what loaded
    try:
        assets = None
        if xflags.needs_default_assets():
            from xtremedistil_tf import default_data

            assets = default_data.ensure_default_assets(
                xflags.FLAGS.cache_dir or None, log=lambda m: print(m, file=sys.stderr))
        config = xflags.configs_from_flags(assets)
        os.makedirs(config.output_dir, exist_ok=True)
        with open(os.path.join(config.output_dir, "flags.txt"), "w", encoding="utf-8") as f:
            f.write(xflags.resolved_flags())
        from xtremedistil_tf import pipeline, report

        doc = pipeline.run(config)
    except (ValueError, OSError, RuntimeError, FloatingPointError) as e:
        if os.environ.get("XTREMEDISTIL_DEBUG"):
            raise
        # Bad flags, files or models: one line that says what to fix, no traceback.
        print(f"error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    print(report.comparison_table(doc))
    if languages := report.language_table(doc):
        print(languages)
    student = doc["student"]
    share = student["embedding_params"] / student["params"]
    note = f"\nstudent: {share:.0%} of its {student['params']:,} parameters are word embeddings"
    if "trimmed_vocab" in student:
        kept = student["trimmed_vocab"]
        note += (f"; exported with {kept['vocab'][1]:,} of {kept['vocab'][0]:,} sub-words, "
                 f"{kept['params'][1]:,} parameters (--trim_vocab)")
    elif share > 0.5:
        note += "; --trim_vocab exports only the sub-words of the training and transfer text"
    print(note)
    exported = doc["export"].get("student") or next(iter(doc["export"].values()), None)
    print(f"speed-up {doc['speedup']:.2f}x at batch {config.speed_batch_size} x "
          f"{config.speed_seq_length} tokens; metrics in "
          f"{os.path.join(config.output_dir, 'metrics.json')}; "
          + (f"student export {exported}" if exported else "no export (--export_formats=none)"))
    return 0


if __name__ == "__main__":
    app.run(main)
