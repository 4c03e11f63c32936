"""xtremedistil_tf/sweep.py (scripts/sweep.py is its command): grid parsing, point names, an
end-to-end sweep on tiny models, flagfiles.

The end-to-end tests run real (seconds-long) run_distil.py points over flags/smoke.cfg: a 2x2
sweep, the same call again (every point skipped), and a sweep with a failing point.
"""

import csv
import io
import os
import re

import pytest

from conftest import REPO, in_repo
from xtremedistil_tf import sweep, sweep_grid, sweep_tables

# Keeps every point a few seconds long: the teacher is not fine-tuned, one student stage.
FAST = ["--stages=labels", "--nogradual_unfreezing", "--teacher_epochs=0"]


@pytest.fixture(scope="module")
def kinds():
    return sweep_grid.flag_kinds()


def _run(*args, expect=0):
    """`python scripts/sweep.py ARGS` from the repository root, the sweep itself in this process
    (its points are separate run_distil.py processes, as always) -> its stdout + stderr."""
    out = io.StringIO()
    with in_repo(out, out):
        try:
            code = sweep.main(list(args))
        except SystemExit as e:  # argparse's errors
            code = e.code
    assert code == expect, out.getvalue()
    return out.getvalue()


def _csv(folder):
    with open(os.path.join(folder, "sweep.csv"), encoding="utf-8") as f:
        return list(csv.DictReader(f))


# Grid parsing.


def test_points_are_the_cartesian_product_first_key_slowest(kinds):
    grid = sweep_grid.parse_grid(" learning_rate=1e-5, 3e-5 ; student=l1-h16,l2-h16;", kinds)
    assert grid == [("learning_rate", ["1e-5", "3e-5"]), ("student", ["l1-h16", "l2-h16"])]
    assert sweep_grid.points(grid) == [
        (("learning_rate", "1e-5"), ("student", "l1-h16")),
        (("learning_rate", "1e-5"), ("student", "l2-h16")),
        (("learning_rate", "3e-5"), ("student", "l1-h16")),
        (("learning_rate", "3e-5"), ("student", "l2-h16")),
    ]


def test_a_pipe_separates_values_that_contain_commas(kinds):
    grid = sweep_grid.parse_grid("train_file=en=a.conll|en=a.conll,it=b.conll;"
                            "stages=logits,labels|labels;student=teacher:0,2,4", kinds)
    assert grid == [("train_file", ["en=a.conll", "en=a.conll,it=b.conll"]),
                    ("stages", ["logits,labels", "labels"]),
                    ("student", ["teacher:0", "2", "4"])]  # no '|': commas separate values
    assert len(sweep_grid.points(grid)) == 12


def test_booleans_become_flag_and_noflag(kinds, capsys):
    grid = sweep_grid.parse_grid("freeze_encoder=true,False;teacher_epochs=2", kinds)
    assert grid == [("freeze_encoder", ["true", "false"]), ("teacher_epochs", ["2"])]
    assert [sweep_grid.flag_args(p, kinds) for p in sweep_grid.points(grid)] == [
        ["--freeze_encoder", "--teacher_epochs=2"], ["--nofreeze_encoder", "--teacher_epochs=2"]]
    # The dry run parses each point's arguments as run_distil.py does, and prints its command.
    code = sweep.main(["--flagfile", "flags/smoke.cfg", "--grid", "freeze_encoder=yes,no",
                       "--output_dir", "unused", "--dry_run", "--", "--epochs=1"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and len(out) == 2
    assert "--freeze_encoder --epochs=1 --output_dir=" in out[0]
    assert "--nofreeze_encoder --epochs=1 --output_dir=" in out[1]
    assert out[1].endswith(os.path.join("unused", "points", "freeze_encoder=false",
                                        "saved_models"))


def test_env_keys_set_environment_variables_not_flags(kinds, capsys):
    grid = sweep_grid.parse_grid("env.TF_ENABLE_ONEDNN_OPTS=1,0;seed=1", kinds)
    assert grid == [("env.TF_ENABLE_ONEDNN_OPTS", ["1", "0"]), ("seed", ["1"])]
    point = sweep_grid.points(grid)[1]
    assert sweep_grid.flag_args(point, kinds) == ["--seed=1"]
    assert sweep_grid.env_vars(point) == {"TF_ENABLE_ONEDNN_OPTS": "0"}
    assert sweep_grid.point_name(point) == "env.TF_ENABLE_ONEDNN_OPTS=0_seed=1"
    code = sweep.main(["--flagfile", "flags/smoke.cfg", "--grid", "env.TF_ENABLE_ONEDNN_OPTS=0",
                       "--output_dir", "unused", "--dry_run"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and out[0].startswith("TF_ENABLE_ONEDNN_OPTS=0 python run_distil.py ")


def test_spread_is_mean_std_and_range_of_the_done_points_per_group():
    f1 = {("a", "1"): 0.5, ("a", "2"): 0.7, ("a", "3"): 0.9, ("b", "1"): 0.4, ("b", "2"): None}
    rows = [{"point": f"{g}{s}", "status": "done" if v is not None else "failed", "head": g,
             "seed": s, "student_f1": "" if v is None else str(v), "wall_s": "10"}
            for (g, s), v in f1.items()]
    spread = sweep_tables.spread_rows(rows, ["head", "seed"], "seed")
    assert [(r["head"], r["runs"]) for r in spread] == [("a", 3), ("b", 1)]
    a, b = spread
    assert a["student_f1_mean"] == pytest.approx(0.7)
    assert a["student_f1_std"] == pytest.approx(0.2)  # sample std: sqrt((0.04 + 0 + 0.04) / 2)
    assert (a["student_f1_min"], a["student_f1_max"]) == (0.5, 0.9)
    assert b["student_f1_std"] == 0.0 and "teacher_f1_mean" not in b
    table = sweep_tables.spread_markdown(spread, ["head", "seed"], "seed")
    assert "| a | 3 | — | 0.700 ± 0.200 (0.500–0.900) | — | — | 10 s |" in table


@pytest.mark.parametrize("grid, message", [
    ("learning_rate", "'learning_rate' has no '='"),
    ("env.1X=1", "'env.1X' is not a flag name (nor env.NAME"),
    ("learning_rate=", "empty value"),
    ("learning_rate=1e-3,,1e-4", "empty value"),
    ("learning_rate=1e-3,", "empty value"),
    ("learning_rate=1e-3;learning_rate=1e-4", "'learning_rate' appears twice"),
    ("learning_rate=1e-3,1e-3", "a value repeats"),
    ("learning_rat=1e-3", "unknown flag 'learning_rat' (did you mean learning_rate?)"),
    ("freeze_encoder=maybe", "boolean flag"),
    ("output_dir=a,b", "set by the sweep"),
    (" ; ", "no key=values"),
    ("learning_rate=fast", "point learning_rate=fast: flag --learning_rate=fast"),
    ("stages=logits,lables", "unknown stage 'lables'"),
])
def test_bad_grids_stop_with_one_clear_line(grid, message, capsys):
    with pytest.raises(SystemExit) as e:
        sweep.main(["--flagfile", "flags/smoke.cfg", "--grid", grid, "--output_dir", "unused"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("sweep.py: error: ") and message in err, err


def test_bad_extra_flags_and_sort_keys_stop_early(capsys):
    for args, message in [
        (["--", "--output_dir=x"], "the sweep sets --output_dir"),
        (["--", "--nofreeze_encoder"], "--freeze_encoder is a grid key"),
        (["--", "--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
        (["--sort_by", "f1"], "--sort_by=f1: not a numeric column"),
        (["--spread_over", "seed"], "--spread_over=seed: not a grid key (freeze_encoder)"),
    ]:
        with pytest.raises(SystemExit):
            sweep.main(["--flagfile", "flags/smoke.cfg", "--grid", "freeze_encoder=true,false",
                        "--output_dir", "unused", *args])
        assert message in capsys.readouterr().err


# Point names.


def test_point_names_are_safe_unique_and_deterministic(kinds):
    assert sweep_grid.point_name((("learning_rate", "1e-5"), ("student", "xtremedistil-l6-h256"))) \
        == "learning_rate=1e-5_student=xtremedistil-l6-h256"
    values = ["teacher:0,2,4", "teacher:0+2+4", "teacher-0-2-4", "a/b", "a,b", "a b", "../x",
              "-1", "é", "x" * 300, "x" * 301,
              "en=../corpus/wikiann/en/train.conll",
              "en=../corpus/wikiann/en/train.conll,it=../corpus/wikiann/it/train.conll",
              "en=/other/en/train.conll,it=/other/it/train.conll"]
    names = [sweep_grid.point_name((("student", v), ("learning_rate", "1e-3"))) for v in values]
    assert len(set(names)) == len(names)
    assert names == [sweep_grid.point_name((("student", v), ("learning_rate", "1e-3")))
                     for v in values]
    for name in names:
        assert re.fullmatch(r"[A-Za-z0-9._+=-]+", name) and len(name) <= 100, name
    assert names[2] == "student=teacher-0-2-4_learning_rate=1e-3"  # already safe: kept as is
    assert re.fullmatch(r"student=teacher-0\+2\+4-[0-9a-f]{6}_learning_rate=1e-3", names[0])
    assert re.fullmatch(r"student=en\+it-[0-9a-f]{6}_learning_rate=1e-3", names[-2])
    many = tuple((k, "y" * 40) for k in kinds if not kinds[k])[:20]
    assert len(sweep_grid.point_name(many)) <= sweep_grid.MAX_NAME_CHARS


# End to end, on tiny models.


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A 2x1x1 sweep over flags/smoke.cfg, both points at once, with Eigen's kernels (an
    environment variable) and the spread over the learning rates (the grid's product and order
    are checked above without running anything)."""
    out = str(tmp_path_factory.mktemp("sweep"))
    grid = "learning_rate=1e-3,5e-4;student=l1-h16;env.TF_ENABLE_ONEDNN_OPTS=0"
    args = ["--flagfile", "flags/smoke.cfg", "--grid", grid, "--output_dir", out,
            "--parallel", "2", "--spread_over", "learning_rate", "--", *FAST]
    log = _run(*args)
    return out, args, log


def test_a_sweep_runs_every_point_and_tabulates_them(swept):
    out, _, log = swept
    rows = _csv(out)
    assert [(r["learning_rate"], r["student"]) for r in rows] == [
        ("1e-3", "l1-h16"), ("5e-4", "l1-h16")]
    for r in rows:
        assert r["status"] == "done" and r["error"] == "", r
        assert r["point"] == (f"learning_rate={r['learning_rate']}_student={r['student']}"
                              "_env.TF_ENABLE_ONEDNN_OPTS=0")
        for column in ("teacher_f1", "student_f1", "teacher_dev_f1", "student_dev_f1"):
            assert 0.0 <= float(r[column]) <= 1.0
        assert int(r["student_params"]) > 0 and float(r["student_size_mb"]) > 0
        assert float(r["speedup"]) > 0 and float(r["wall_s"]) > 0
        # smoke.cfg's test files are en and de: the student's F1 on each.
        assert 0.0 <= float(r["student_f1_de"]) <= 1.0 and 0.0 <= float(r["student_f1_en"]) <= 1
        folder = os.path.join(out, "points", r["point"])
        with open(os.path.join(folder, "flags.txt"), encoding="utf-8") as f:
            flags = f.read()
        assert f"--student={r['student']}\n" in flags and "--nogradual_unfreezing" in flags
        assert f"--learning_rate={float(r['learning_rate'])}\n" in flags
        assert os.path.isdir(os.path.join(folder, "saved_models"))
        with open(os.path.join(folder, "log.txt"), encoding="utf-8") as f:
            log_text = f.read()
        # The environment variable reached the run: its command line and its CPU line say so.
        assert "\n$ TF_ENABLE_ONEDNN_OPTS=0 " in log_text
        assert "oneDNN off (TF_ENABLE_ONEDNN_OPTS=0)" in log_text
    with open(os.path.join(out, "sweep.md"), encoding="utf-8") as f:
        table = f.read()
    assert table.startswith("| learning_rate | student | env.TF_ENABLE_ONEDNN_OPTS | teacher F1 |")
    assert "| student dev F1 | student F1 de | student F1 en | student params |" in table
    assert "2 of 2 points done" in table and table.strip() in log
    f1s = [float(line.split(" | ")[3]) for line in table.splitlines()[2:4]]
    assert f1s == sorted(f1s, reverse=True)  # --sort_by student_f1, descending
    with open(os.path.join(out, "spread.csv"), encoding="utf-8") as f:
        (spread,) = list(csv.DictReader(f))
    assert (spread["student"], spread["env.TF_ENABLE_ONEDNN_OPTS"], spread["runs"]) == (
        "l1-h16", "0", "2")
    f1s = [float(r["student_f1"]) for r in rows]
    assert float(spread["student_f1_mean"]) == pytest.approx(sum(f1s) / 2, abs=1e-5)
    assert float(spread["student_f1_max"]) == pytest.approx(max(f1s), abs=1e-5)
    assert float(spread["student_f1_std"]) == pytest.approx(abs(f1s[0] - f1s[1]) / 2 ** 0.5,
                                                            abs=1e-5)
    with open(os.path.join(out, "spread.md"), encoding="utf-8") as f:
        assert f.read().strip() in log


def test_a_second_call_skips_finished_points(swept):
    out, args, _ = swept
    metrics = [os.path.join(out, "points", r["point"], "metrics.json") for r in _csv(out)]
    before = [os.stat(m).st_mtime_ns for m in metrics]
    log = _run(*args)
    assert log.count("skipped: finished earlier") == 2
    assert [os.stat(m).st_mtime_ns for m in metrics] == before
    assert [r["status"] for r in _csv(out)] == ["done"] * 2


def test_a_failing_point_is_recorded_and_the_sweep_goes_on(swept):
    out, _, _ = swept
    # A finished point without metrics.json is rerun, which resumes it; it comes after the
    # failing one, so the sweep has to go on after the failure.
    resumed = os.path.join(out, "points", "learning_rate=1e-3_student=l1-h16"
                           "_env.TF_ENABLE_ONEDNN_OPTS=0", "metrics.json")
    os.remove(resumed)
    grid = "learning_rate=1e-3;student=teacher:9|l1-h16;env.TF_ENABLE_ONEDNN_OPTS=0"
    log = _run("--flagfile", "flags/smoke.cfg", "--grid", grid, "--output_dir", out, "--", *FAST,
               expect=1)
    rows = _csv(out)
    assert [(r["student"], r["status"]) for r in rows] == [("teacher:9", "failed"),
                                                          ("l1-h16", "done")], (rows, log)
    assert rows[0]["error"].startswith("error: --student=teacher:9: the teacher has layers")
    assert rows[0]["student_f1"] == "" and float(rows[0]["wall_s"]) > 0
    assert 0.0 <= float(rows[1]["student_f1"]) <= 1.0 and os.path.exists(resumed)
    assert "resuming" in log and "1 of 2 points failed" in log
    with open(os.path.join(out, "sweep.md"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[2].startswith("| 1e-3 | l1-h16 |") and "| done |" in lines[2]
    assert lines[3].startswith("| 1e-3 | teacher:9 | 0 | — |")  # failed rows last
    assert "failed: --student=teacher:9: the teacher has layers" in lines[3]


# Flagfiles.

# Zero-shot strategy files need data files with languages: they layer on smoke.cfg.
def resolve_flagfiles() -> dict:
    """flags/*.cfg -> {"teacher", "student", "strategy"} or {"error"}, each parsed as
    run_distil.py parses it (zero-shot strategy files need data files with languages: they
    layer on smoke.cfg; the rest on base.cfg), nothing read."""
    import glob

    from xtremedistil_tf import default_data, flags as xflags

    on_smoke = {"tsl.cfg", "msd.cfg", "mtmt.cfg"}
    # What run_distil.py fills in when files or the teacher are left empty.
    assets = default_data.DefaultAssets("train.conll", "dev.conll", "test.conll", "teacher")
    result = {}
    for path in sorted(glob.glob(os.path.join(REPO, "flags", "*.cfg"))):
        name = os.path.relpath(path, REPO)
        base = "flags/smoke.cfg" if os.path.basename(path) in on_smoke else "flags/base.cfg"
        xflags.FLAGS.unparse_flags()
        try:
            xflags.FLAGS(["run_distil.py", "--flagfile=" + base, "--flagfile=" + name])
            config = xflags.configs_from_flags(
                assets if xflags.needs_default_assets() else None)
            result[name] = {"teacher": config.teacher.model, "student": config.student.model,
                            "strategy": config.strategy}
        except Exception as e:  # noqa: BLE001  (reported per file below)
            result[name] = {"error": f"{type(e).__name__}: {e}"}
        finally:
            xflags.FLAGS.unparse_flags()
    return result


def test_every_flagfile_resolves_into_configs(monkeypatch):
    monkeypatch.chdir(REPO)  # flag files name others relative to the repository
    result = resolve_flagfiles()
    for name in ("base", "smoke", "tsl", "teacher_mbert", "teacher_xlmr_ner40", "teacher_e5_small"):
        assert f"flags/{name}.cfg" in result
    failed = {k: v["error"] for k, v in result.items() if "error" in v}
    assert not failed, failed
    assert result["flags/teacher_mbert.cfg"]["teacher"] == "bert-base-multilingual-cased"
    assert result["flags/teacher_xlmr_ner40.cfg"]["teacher"] == "jplu/tf-xlm-r-ner-40-lang"
    assert result["flags/teacher_e5_small.cfg"]["teacher"] == "../models/multilingual-e5-small"
    assert result["flags/msd.cfg"]["strategy"] == "msd"
