"""Runs run_distil.py once per point of a grid of flag values and tabulates the results.

(`scripts/sweep.py` is the command; `python -m xtremedistil_tf.sweep` is the same.)

    python scripts/sweep.py --flagfile flags/base.cfg \
        --grid 'learning_rate=1e-5,3e-5;student=xtremedistil-l6-h256,xtremedistil-l6-h384' \
        --output_dir runs/sweep_lr [--parallel 2] [--sort_by student_f1] \
        [-- --train_file=train.conll --dev_file=dev.conll --test_file=test.conll]

Grid syntax (`--grid`): `key=v1,v2;key2=w1,w2`, keys are run_distil.py flag names, and the
points are the cartesian product of the value lists, the first key varying slowest. A key
`env.NAME` sets the environment variable NAME of each point's process instead of a flag (e.g.
`env.TF_ENABLE_ONEDNN_OPTS=1,0`: oneDNN's and Eigen's kernels, two floating-point orders).
A value list that contains `|` is split on `|` instead of `,`, for values with commas:
`stages=logits,labels|labels` or `train_file=en=a.conll|en=a.conll,it=b.conll`. Boolean flags
take true/false (also yes/no, 1/0): `freeze_encoder=true,false` runs `--freeze_encoder` and
`--nofreeze_encoder`. `--flagfile` may be repeated (layered flagfiles, later ones win); flags after
`--` are added to every run, after the grid's. Every run's working directory is the repository
root, so relative paths inside flags are relative to it; `--flagfile` and `--output_dir` are
relative to where this script is called from (a --flagfile not found there is looked up in the
repository). Before anything runs, every point's flags are parsed and turned into configs as
run_distil.py does, so a bad value stops the sweep at once with one line; `--dry_run` then
prints each point's command instead of running it. `--parallel N` runs N points at once (each
a run_distil.py process; on a CPU-only machine they share its cores).

Outputs, under OUTPUT_DIR:
  points/<name>/   one run_distil.py --output_dir per point, named after its grid values
                   (e.g. `learning_rate=1e-5_student=xtremedistil-l6-h256`; characters that are
                   unsafe in paths are replaced, file lists show their languages, and a short
                   hash keeps such names and long ones unique: `train_file=en+it-3f9a1c`,
                   `student=teacher-0+2+4-8d41e7`). It holds the run's flags.txt, metrics.json,
                   checkpoints, log.txt (the run's stdout and stderr, appended across attempts)
                   and saved_models/.
  sweep.csv        one row per point of this grid: point, status (done/failed), one column per
                   grid key, teacher/student test and dev F1, student params and size, speed-up,
                   wall seconds, the error line of a failed run, then the student's test F1 per
                   language (student_f1_<lang>) when the test files carry languages. Rewritten
                   (atomically) after every point, with status `pending` for points not run yet.
  sweep.md         the same as a markdown table, sorted by --sort_by (a numeric column;
                   default student_f1, descending unless --ascending; failed rows last); also
                   printed at the end.
  spread.csv/.md   with --spread_over KEY (a grid key, e.g. seed): one row per combination of
                   the other keys, with each F1's mean ± standard deviation (min-max) and the
                   mean wall time over KEY's values; also printed at the end.

Resume: rerun the same command. Points whose metrics.json exists are skipped; a point whose
folder exists without one is run again, which resumes it after its last finished step
(run_distil.py refuses a folder that holds a run with other settings). Skipping only looks at
metrics.json: use a new OUTPUT_DIR when the flagfiles or the flags after `--` change. A failed
point does not stop the sweep; the exit code is 0 when every point finished, 1 otherwise.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import copy
import csv
import io
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
import types

from xtremedistil_tf import sweep_grid as grid_lib, sweep_tables as tables

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # where run_distil.py is

METRICS, LANG_PREFIX = tables.METRICS, tables.LANG_PREFIX


@contextlib.contextmanager
def _in_repo():
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        yield
    finally:
        os.chdir(cwd)


def preflight(argvs: dict[str, list[str]]) -> None:
    """Parses every point's run_distil.py arguments and builds its configs (no TensorFlow, no
    files read): unknown flags, bad values or missing flagfiles fail here with one line instead
    of once per point, after loading TensorFlow."""
    from absl import flags as absl_flags

    from xtremedistil_tf import flags as xflags

    # Stands in for the embedded default's files and teacher, as run_distil.py fills them in.
    default = types.SimpleNamespace(train_file="train.conll", dev_file="dev.conll",
                                    test_file="test.conll", teacher_dir="teacher")
    with _in_repo():  # nested --flagfile paths are relative to the runs' working directory
        for name, argv in argvs.items():
            values = copy.deepcopy(xflags.FLAGS)  # the process's own FLAGS stay unparsed
            values.unparse_flags()
            try:
                values(["run_distil.py", *argv])
                xflags.configs_from_flags(default, flag_values=values)
            except (absl_flags.Error, ValueError) as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ValueError(f"point {name}: {first}") from None


def _error_line(path: str, offset: int) -> str:
    """What went wrong, from the log written since `offset`: its last `error:` line, else the
    last line that names an error, else the last non-empty line."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            f.seek(offset)
            lines = [x.strip() for x in f.read().splitlines() if x.strip()]
    except OSError:
        return ""
    for pattern in (r"^error:", r"Flags parsing error|^[A-Za-z_.]*(Error|Exception)\b"):
        hits = [x for x in lines if re.search(pattern, x)]
        if hits:
            return hits[-1]
    lines = [x for x in lines if not x.startswith(("Pass --helpshort", "Try --helpfull"))]
    return lines[-1] if lines else ""


def _metrics_row(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    teacher, student = doc.get("teacher", {}), doc.get("student", {})
    return {"teacher_f1": teacher.get("f1"), "student_f1": student.get("f1"),
            "teacher_dev_f1": teacher.get("dev_f1"), "student_dev_f1": student.get("dev_f1"),
            "student_params": student.get("params"), "student_size_mb": student.get("size_mb"),
            "speedup": doc.get("speedup"), "wall_s": doc.get("wall_seconds"),
            **{f"{LANG_PREFIX}{lang}": m.get("f1")
               for lang, m in sorted(student.get("per_language", {}).items())}}


class Sweep:
    """Runs the points (skipping finished ones) and keeps sweep.csv up to date."""

    def __init__(self, output_dir: str, keys: list[str], base: list[str], extra: list[str],
                 kinds: dict[str, bool]):
        self.output_dir, self.keys, self.base, self.extra, self.kinds = (
            output_dir, keys, base, extra, kinds)
        self.rows: dict[str, dict] = {}
        self.lock = threading.Lock()

    def folder(self, name: str) -> str:
        return os.path.join(self.output_dir, "points", name)

    def argv(self, name: str, overrides) -> list[str]:
        """run_distil.py's arguments for a point (without the interpreter and script)."""
        folder = self.folder(name)
        return [*self.base, *grid_lib.flag_args(overrides, self.kinds), *self.extra,
                f"--output_dir={folder}", f"--export_dir={os.path.join(folder, 'saved_models')}"]

    def add(self, name: str, overrides) -> None:
        self.rows[name] = {"point": name, "status": "pending", **dict(overrides), "error": ""}

    def _log(self, message: str) -> None:
        with self.lock:
            print(message, file=sys.stderr, flush=True)

    def run(self, name: str, overrides) -> str:
        """Runs (or skips, or resumes) one point; returns its status."""
        folder = self.folder(name)
        metrics = os.path.join(folder, "metrics.json")
        if os.path.exists(metrics):
            self._log(f"[{name}] skipped: finished earlier ({metrics})")
            return self._finish(name, metrics, None)
        resumed = os.path.isdir(folder)
        os.makedirs(folder, exist_ok=True)
        cmd = [sys.executable, os.path.join(REPO, "run_distil.py"), *self.argv(name, overrides)]
        log_path = os.path.join(folder, "log.txt")
        self._log(f"[{name}] {'resuming' if resumed else 'running'}; log: {log_path}")
        start = time.time()
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"\n$ {_command_line(cmd, overrides)}\n")
            log.flush()
            offset = log.tell()  # this attempt's output starts here
            code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1",
                                        **grid_lib.env_vars(overrides)})
        elapsed = time.time() - start
        if code:
            error = _error_line(log_path, offset) or f"exit code {code}"
        elif not os.path.exists(metrics):
            error = "exited 0 without writing metrics.json"
        else:
            error = None
        status = self._finish(name, metrics, error, elapsed)
        if status == "done":
            self._log(f"[{name}] done in {elapsed:.0f} s")
        else:
            self._log(f"[{name}] failed (exit {code}) after {elapsed:.0f} s: "
                      f"{self.rows[name]['error']}")
        return status

    def _finish(self, name: str, metrics: str, error: str | None,
                elapsed: float | None = None) -> str:
        """Records a point's outcome (its metrics, or `error`) and rewrites sweep.csv."""
        values = {"status": "failed", "error": error, "wall_s": elapsed}
        if error is None:
            try:
                values = {"status": "done", "error": "", **_metrics_row(metrics)}
            except (OSError, ValueError) as e:
                values["error"] = f"unreadable {metrics}: {e}"
        with self.lock:
            self.rows[name].update(values)
        self.write_csv()
        return values["status"]

    def write_csv(self) -> None:
        with self.lock:
            columns = ["point", "status", *self.keys, *METRICS, "error",
                       *tables.language_columns(list(self.rows.values()))]
            _write_csv(os.path.join(self.output_dir, "sweep.csv"), columns,
                       list(self.rows.values()))


def _command_line(cmd: list[str], overrides) -> str:
    """A point's command as a shell line, its environment variables first."""
    env = [f"{k}={shlex.quote(v)}" for k, v in grid_lib.env_vars(overrides).items()]
    return " ".join([*env, shlex.join(cmd)])


def _write(path: str, text: str) -> None:
    """Writes `text` atomically (temporary file, then rename)."""
    with open(path + ".tmp", "w", newline="", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def _write_csv(path: str, columns: list[str], rows: list[dict]) -> None:
    """`rows` as CSV with `columns` (missing cells empty), written atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: _csv_cell(r.get(k)) for k in columns} for r in rows)
    _write(path, text.getvalue())


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _flagfile(path: str) -> str | None:
    for candidate in (os.path.abspath(path), os.path.join(REPO, path)):
        if os.path.isfile(candidate):
            return candidate
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="sweep.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flagfile", action="append", default=[],
                   help="run_distil.py flagfile (repeatable; later ones win)")
    p.add_argument("--grid", required=True, help="'key=v1,v2;key2=w1|w2' (see the docstring)")
    p.add_argument("--output_dir", required=True, help="sweep folder: points/, sweep.csv/.md")
    p.add_argument("--parallel", type=int, default=1, help="points run at once (default 1)")
    p.add_argument("--sort_by", default="student_f1",
                   help=f"numeric column of sweep.csv ({', '.join(METRICS)}, "
                   f"{LANG_PREFIX}<lang> or a grid key); default student_f1")
    p.add_argument("--ascending", action="store_true", help="sort ascending (default descending)")
    p.add_argument("--spread_over", default="",
                   help="a grid key (e.g. seed): also write spread.csv/.md, each F1's mean, "
                   "standard deviation and range over its values")
    p.add_argument("--dry_run", action="store_true", help="print every point's command and stop")
    p.add_argument("extra", nargs="*", help="more run_distil.py flags for every point (after --)")
    args = p.parse_args(argv)

    if args.parallel < 1:
        p.error(f"--parallel={args.parallel}: must be at least 1")
    base = []
    for path in args.flagfile:
        found = _flagfile(path)
        if not found:
            p.error(f"--flagfile={path}: no such file")
        base.append(f"--flagfile={found}")
    kinds = grid_lib.flag_kinds()
    try:
        grid = grid_lib.parse_grid(args.grid, kinds)
    except ValueError as e:
        p.error(f"--grid: {e}")
    keys = [k for k, _ in grid]
    try:
        grid_lib.check_extra(args.extra, keys, kinds)
    except ValueError as e:
        p.error(str(e))
    if args.sort_by not in METRICS and not args.sort_by.startswith(LANG_PREFIX):
        values = dict(grid).get(args.sort_by)
        if values is None or any(tables.number(v) is None for v in values):
            p.error(f"--sort_by={args.sort_by}: not a numeric column; use one of "
                    f"{', '.join(METRICS)}, {LANG_PREFIX}<lang> or a grid key with numeric "
                    "values")

    if args.spread_over and args.spread_over not in keys:
        p.error(f"--spread_over={args.spread_over}: not a grid key ({', '.join(keys)})")

    output_dir = os.path.abspath(args.output_dir)
    sweep = Sweep(output_dir, keys, base, args.extra, kinds)
    todo = []
    for overrides in grid_lib.points(grid):
        name = grid_lib.point_name(overrides)
        sweep.add(name, overrides)
        todo.append((name, overrides))
    try:
        preflight({name: sweep.argv(name, o) for name, o in todo})
    except ValueError as e:
        p.error(str(e))
    if args.dry_run:
        for name, overrides in todo:
            print(_command_line(["python", "run_distil.py", *sweep.argv(name, overrides)],
                                overrides))
        return 0

    os.makedirs(os.path.join(output_dir, "points"), exist_ok=True)
    print(f"{len(todo)} points, {args.parallel} at a time, under {output_dir}/points",
          file=sys.stderr, flush=True)
    sweep.write_csv()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=args.parallel)
    try:
        futures = [pool.submit(sweep.run, name, overrides) for name, overrides in todo]
        statuses = [f.result() for f in futures]
    except KeyboardInterrupt:
        # The runs got the same SIGINT; do not start queued points. Rerun to resume.
        pool.shutdown(wait=True, cancel_futures=True)
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    pool.shutdown()

    rows = list(sweep.rows.values())
    table = tables.markdown(rows, keys, args.sort_by, args.ascending)
    _write(os.path.join(output_dir, "sweep.md"), table)
    print(table)
    if args.spread_over:
        spread = tables.spread_rows(rows, keys, args.spread_over)
        _write_csv(os.path.join(output_dir, "spread.csv"),
                   tables.spread_columns(keys, args.spread_over), spread)
        table = tables.spread_markdown(spread, keys, args.spread_over)
        _write(os.path.join(output_dir, "spread.md"), table)
        print(table)
    failed = statuses.count("failed")
    if failed:
        print(f"{failed} of {len(statuses)} points failed; see their log.txt; rerun the same "
              "command to retry them", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
