"""scripts/reproduce_wikiann.py: seeded per-language samples, the summary table and README update.

The runs themselves are run_distil.py calls, tested in test_pipeline.py; here they are replaced
by metrics.json files written by hand, so the numbers in the table can be checked exactly.
"""

import argparse
import csv
import json
import pathlib
import sys

import pytest

from conftest import FIXTURES as _FIXTURES, REPO

FIXTURES = pathlib.Path(_FIXTURES)
sys.path.insert(0, str(pathlib.Path(REPO) / "scripts"))
import reproduce_wikiann as rw  # noqa: E402


def _entry(f1s: dict, params: int, ms: float) -> dict:
    return {"f1": 0.5, "params": params, "size_mb": params * 4 / 1e6, "ms_per_batch": ms,
            "per_language": {k: {"f1": v, "sentences": 2000 if k == "en" else 1000}
                             for k, v in f1s.items()},
            "timing": {"batch_size": 32, "seq_length": 128}}


def _fake_run(out, name, teacher, student, speedup, wall, teacher_seconds=None):
    folder = out / "runs" / name.replace(" ", "_")
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"teacher": teacher, "student": student, "speedup": speedup, "wall_seconds": wall}
    (folder / "metrics.json").write_text(json.dumps(doc))
    if teacher_seconds is not None:
        state = {"done": {"teacher": {"seconds": teacher_seconds}}}
        (folder / "state.json").write_text(json.dumps(state))


def test_samples_are_seeded_subsets_with_a_language_per_file(tmp_path):
    for lang in ("en", "de"):
        for split in ("train", "dev", "test"):
            (tmp_path / "src" / lang).mkdir(parents=True, exist_ok=True)
            (tmp_path / "src" / lang / f"{split}.conll").write_text(
                (FIXTURES / "tiny_train.conll").read_text())
    args = rw.argparse.Namespace(train_per_lang=5, dev_per_lang=0, test_per_lang=3, seed=1)
    files = rw.sample_data(str(tmp_path / "src"), str(tmp_path / "d"), ["en", "de"], args)
    assert files["train"] == f"en={tmp_path}/d/en/train.conll,de={tmp_path}/d/de/train.conll"
    full = rw.data_lib.read_conll(str(FIXTURES / "tiny_train.conll"))
    train = rw.data_lib.read_conll(str(tmp_path / "d" / "en" / "train.conll"))
    assert len(train) == 5 and all(s.words in {f.words for f in full} for s in train)
    assert len(rw.data_lib.read_conll(str(tmp_path / "d" / "en" / "dev.conll"))) == len(full)
    assert len(rw.data_lib.read_conll(str(tmp_path / "d" / "de" / "test.conll"))) == 3
    again = rw.sample_data(str(tmp_path / "src"), str(tmp_path / "e"), ["en"], args)
    assert (tmp_path / "e" / "en" / "train.conll").read_text() == \
        (tmp_path / "d" / "en" / "train.conll").read_text()
    assert again["train"].startswith("en=")


def test_summary_rows_table_and_readme(tmp_path):
    teacher = _entry({"en": 0.9, "de": 0.8}, 100_000_000, 400.0)
    first = rw.RUNS[0][0]
    _fake_run(tmp_path, first, teacher, _entry({"en": 0.85, "de": 0.75}, 60_000_000, 200.0),
              2.0, 900.0, teacher_seconds=600.0)
    _fake_run(tmp_path, "l6-h256", teacher, _entry({"en": 0.7, "de": 0.6}, 20_000_000, 80.0),
              5.0, 300.0)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{rw.BEGIN}\nold table\n{rw.END}\nafter\n")
    code = rw.main(["--data", "x", "--teacher", "t", "--output_dir", str(tmp_path),
                    "--results", str(tmp_path / "res"), "--langs", "en,de", "--summary_only",
                    "--readme", str(readme), "--test_per_lang", "2000"])
    assert code == 0
    with open(tmp_path / "res" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["teacher", first, "l6-h256"]
    assert float(rows[0]["avg_f1"]) == pytest.approx(0.85)
    assert float(rows[2]["kept"]) == pytest.approx(0.65 / 0.85, abs=1e-4)
    assert float(rows[2]["speedup"]) == 5.0 and float(rows[0]["wall_s"]) == 600.0
    assert float(rows[2]["tokens_per_s"]) == pytest.approx(32 * 128 / 0.080, rel=1e-4)
    for column in ("model", "avg_f1", "kept", "params", "size_mb", "tokens_per_s", "speedup",
                   "f1_en", "f1_de"):
        assert column in rows[0]
    text = readme.read_text()
    assert "old table" not in text and text.startswith("intro\n") and text.endswith("after\n")
    assert "| l6-h256 | 70.0 | 60.0 | **65.0** | 76% |" in text
    assert ("2000 test sentences per language (de 1000: their whole test split), 3000 in all"
            in text)
    assert (tmp_path / "res" / "kept_vs_speedup.png").stat().st_size > 1000


def test_unknown_row_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        rw.main(["--data", "x", "--teacher", "t", "--only", "nope", "--output_dir",
                 str(tmp_path)])
    assert "no such row" in capsys.readouterr().err


def test_zero_shot_summary_has_direct_transfer_then_each_distiller(tmp_path):
    import reproduce_zero_shot as zs

    langs = {"en": 0.8, "de": 0.6, "es": 0.7}
    teacher = _entry(langs, 100, 400.0)
    _fake_run(tmp_path, "TSL", teacher, _entry({"en": 0.7, "de": 0.5, "es": 0.6}, 50, 200.0),
              2.0, 500.0)
    _fake_run(tmp_path, "MTMT", teacher, _entry({"en": 0.7, "de": 0.55, "es": 0.65}, 50, 200.0),
              2.0, 400.0)
    readme = tmp_path / "README.md"
    readme.write_text(f"{zs.BEGIN}\n{zs.END}\n")
    assert zs.main(["--data", "x", "--teacher", "t", "--output_dir", str(tmp_path),
                    "--results", str(tmp_path / "res"), "--targets", "de,es",
                    "--summary_only", "--readme", str(readme)]) == 0
    with open(tmp_path / "res" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["direct transfer (teacher)", "TSL", "MTMT"]
    assert float(rows[0]["avg_f1"]) == pytest.approx(0.65)  # targets only, not the source
    assert float(rows[2]["avg_f1"]) == pytest.approx(0.6)
    assert "| MTMT | 55.0 | 65.0 | **60.0** | -5.0 | 70.0 |" in readme.read_text()


def test_zero_shot_with_several_students_names_runs_and_rows_by_student(tmp_path, capsys):
    import reproduce_zero_shot as zs

    assert zs.parse_students(" big=teacher:0,1,2,3 ; small=l6-h256;") == [
        ("big", "teacher:0,1,2,3"), ("small", "l6-h256")]
    for bad in ("big", "big=", "=l6-h256", "a b=l6-h256", "x=l6-h256;x=l4-h256"):
        with pytest.raises(ValueError):
            zs.parse_students(bad)
    with pytest.raises(SystemExit):
        zs.main(["--data", "x", "--teacher", "t", "--students", "big"])
    assert "--students: 'big': write NAME=SPEC" in capsys.readouterr().err
    rows = {name: flags for name, _, flags in zs.table_rows(
        [("big", "teacher:0,1"), ("small", "l6-h256"), ("pre", "/models/e5")])}
    assert rows["TSL big"] == ["--student=teacher:0,1", "--student_init=select"]
    assert rows["MSD small"] == ["--student=l6-h256", "--student_init=select"]
    assert rows["XtremeDistil pre"] == ["--student=/models/e5"]

    teacher = _entry({"en": 0.8, "de": 0.6}, 100, 400.0)
    _fake_run(tmp_path, "TSL big", teacher, _entry({"en": 0.7, "de": 0.65}, 100, 400.0), 1.0,
              900.0, teacher_seconds=300.0)
    _fake_run(tmp_path, "MSD big", teacher, _entry({"en": 0.7, "de": 0.64}, 100, 400.0), 1.0, 9.0)
    _fake_run(tmp_path, "TSL small", teacher, _entry({"en": 0.6, "de": 0.55}, 20, 100.0), 4.0,
              5.0)
    assert zs.main(["--data", "x", "--teacher", "t", "--output_dir", str(tmp_path),
                    "--results", str(tmp_path / "res"), "--targets", "de", "--summary_only",
                    "--students", "big=teacher:0,1;small=l6-h256"]) == 0
    with open(tmp_path / "res" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], r["student"]) for r in rows] == [
        ("direct transfer (teacher)", ""), ("TSL", "teacher:0,1"), ("MSD", "teacher:0,1"),
        ("TSL", "l6-h256")]
    table = (tmp_path / "res" / "summary.md").read_text()
    assert "| model | student | de | target avg | vs direct |" in table
    assert "| TSL | `l6-h256` | 55.0 | **55.0** | -5.0 | 60.0 | 0.0M |" in table
    # Direct transfer's wall is the teacher's fine-tuning (from the run that did it).
    assert "| direct transfer (teacher) | — | 60.0 | **60.0** | — | 80.0 | 0.0M | 5 min |" \
        in table
    assert "direct transfer's is the teacher's fine-tuning" in table


def test_retimed_speed_replaces_the_per_run_timing(tmp_path):
    teacher = _entry({"en": 0.9}, 100, 400.0)
    _fake_run(tmp_path, rw.RUNS[0][0], teacher, _entry({"en": 0.8}, 50, 420.0), 0.95, 10.0)
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "timing.json").write_text(json.dumps(
        {"ms_per_batch": {"teacher": 400.0, rw.RUNS[0][0]: 200.0}, "batch_size": 32,
         "seq_length": 128}))
    assert rw.main(["--data", "x", "--teacher", "t", "--output_dir", str(tmp_path),
                    "--results", str(tmp_path / "res"), "--langs", "en", "--summary_only"]) == 0
    with open(tmp_path / "res" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[1]["speedup"]) == 2.0
    assert float(rows[1]["tokens_per_s"]) == pytest.approx(32 * 128 / 0.2)
    assert "idle CPU (`--retime`)" in (tmp_path / "res" / "summary.md").read_text()


def test_scale_transfer_pool_is_train_text_only_without_the_labelled_sample(tmp_path):
    import reproduce_wikiann_scale as rs

    full = rw.data_lib.read_conll(str(FIXTURES / "tiny_train.conll"))
    for corpus, lang in (("a", "en"), ("a", "de"), ("b", "es")):
        folder = tmp_path / corpus / lang
        folder.mkdir(parents=True)
        for split in ("train", "dev", "test"):
            sentences = [rw.data_lib.Sentence(words=s.words + (split, lang), tags=s.tags + (
                "O", "O")) for s in full]
            rw.data_lib.write_conll(str(folder / f"{split}.conll"), sentences)
    args = rw.argparse.Namespace(train_per_lang=3, dev_per_lang=0, test_per_lang=0, seed=1)
    files = rw.sample_data(str(tmp_path / "a"), str(tmp_path / "d"), ["en", "de"], args)
    pool = rs.transfer_pool([str(tmp_path / "a"), str(tmp_path / "b")], files["train"], 1)
    assert len(pool) == 3 * len(full) - 2 * 3  # the labelled sample is not in it again
    assert all(s.tags is None and s.words[-2] == "train" for s in pool)  # never dev or test
    assert {s.lang for s in pool} == {"en", "de", "es"}
    assert pool == rs.transfer_pool([str(tmp_path / "a"), str(tmp_path / "b")],
                                    files["train"], 1)  # seeded
    small = rs.write_transfer(pool, 4, str(tmp_path / "out"))
    every = rs.write_transfer(pool, 0, str(tmp_path / "out"))
    read = rw.data_lib.read_unlabelled_files
    assert len(read(small)) == 4 and len(read(every)) == len(pool)
    assert {s.words for s in read(small)} <= {s.words for s in read(every)}  # nested samples
    assert all(spec.split("=")[0] in ("en", "de", "es") for spec in every.split(","))


def test_scale_summary_tables_curve_and_readme(tmp_path):
    import reproduce_wikiann_scale as rs

    teacher = _entry({"en": 0.9, "de": 0.8}, 100_000_000, 400.0)
    run = tmp_path / "teacher_run"
    (run / "teacher").mkdir(parents=True)
    (run / "state.json").write_text(json.dumps({"done": {"teacher": {"seconds": 3600.0,
        "history": [{"epoch": 1, "dev_f1": 0.8}, {"epoch": 2, "dev_f1": 0.84}]}}}))
    (run / "metrics.json").write_text(json.dumps({"attempts": 1}))  # the teacher: not resumed
    # attempts None: a run from before wall time spanned attempts.
    for name, f1, transfer, attempts in (
            ("l6-h256", 0.82, 230_000, 2), ("l4-h256 select 50k", 0.75, 96_000, 1),
            ("l4-h256 select 10k", 0.7, 56_000, 1), ("l4-h256 svd 20k", 0.6, 66_000, None)):
        # The 10k run fine-tuned a teacher itself: that hour is the teacher row's, not its own.
        _fake_run(tmp_path, name, teacher, _entry({"en": f1, "de": f1}, 20_000_000, 80.0),
                  5.0, 7200.0, teacher_seconds=3600.0 if "10k" in name else None)
        doc = json.loads((tmp_path / "runs" / name.replace(" ", "_") / "metrics.json").read_text())
        doc["data"] = {"transfer": transfer}
        if attempts:
            doc["attempts"] = attempts
        (tmp_path / "runs" / name.replace(" ", "_") / "metrics.json").write_text(json.dumps(doc))
    readme = tmp_path / "README.md"
    readme.write_text(f"a\n{rs.BEGIN}\nold\n{rs.END}\nb\n")
    code = rs.main(["--data", "x", "--transfer_from", "y", "--teacher", "t", "--output_dir",
                    str(tmp_path), "--results", str(tmp_path / "res"), "--langs", "en,de",
                    "--summary_only", "--readme", str(readme),
                    "--teacher_checkpoint", str(run / "teacher")])
    assert code == 0
    rows = list(csv.DictReader(open(tmp_path / "res" / "summary.csv")))
    assert [r["model"] for r in rows] == ["teacher", "l6-h256", "l4-h256 select 50k",
                                          "l4-h256 select 10k", "l4-h256 svd 20k"]
    assert float(rows[0]["wall_s"]) == 3600.0 and rows[1]["transfer"] == "230000"
    assert [float(r["wall_s"]) for r in rows[1:]] == [7200.0, 7200.0, 3600.0, 0.0]
    assert float(rows[1]["kept"]) == pytest.approx(0.82 / 0.85, abs=1e-4)
    text = readme.read_text()
    assert "**Students**" in text and "| l6-h256 | 230k |" in text and "old" not in text
    # The curve's rows by transfer size, then the ablation.
    assert text.index("| l4-h256 select 10k |") < text.index("| l4-h256 select 50k |") \
        < text.index("| l4-h256 svd 20k |")
    assert "| 2.0 h |" in text and "| 20.0M | 5.00x | — |" in text
    assert "dev F1 per epoch: 80.0, 84.0" in text
    assert (tmp_path / "res" / "scale.png").stat().st_size > 0
    assert (tmp_path / "res" / "teacher_curve.csv").read_text().count("\n") == 3


def _conll(path, n, lang):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{lang}{i} B-PER\nx O\n\n" for i in range(n)))


def _corpus(data, **sentences):
    """DATA/<lang>/{train,dev,test}.conll with the given number of sentences per language."""
    for lang, n in sentences.items():
        for split in ("train", "dev", "test"):
            _conll(data / lang / f"{split}.conll", n, lang)
    return data


def test_zero_shot_curve_reruns_one_row_per_amount_of_target_text(tmp_path, capsys):
    import reproduce_zero_shot as zs

    data = _corpus(tmp_path / "data", en=30, de=12, es=40)
    args = ["--data", str(data), "--teacher", "t", "--output_dir", str(tmp_path / "out"),
            "--results", str(tmp_path / "res"), "--targets", "de,es", "--target_text", "10",
            "--summary_only"]
    assert zs.curve_sizes("5, 10,0", 10) == [5, 0]  # 10 is the table's own row
    for bad in ("5,x", "5,5", "-1"):
        with pytest.raises(ValueError):
            zs.curve_sizes(bad, 10)
    with pytest.raises(SystemExit):
        zs.main([*args, "--curve", "5", "--curve_row", "Nope"])
    assert "--curve_row='Nope': name one of the rows: TSL, MSD, MTMT" in capsys.readouterr().err

    teacher = _entry({"en": 0.8, "de": 0.6, "es": 0.7}, 100, 400.0)
    for name, de, es in (("TSL", 0.62, 0.72), ("TSL @5", 0.61, 0.70), ("TSL @all", 0.66, 0.74)):
        _fake_run(tmp_path / "out", name, teacher, _entry({"en": 0.7, "de": de, "es": es}, 100,
                                                           400.0), 1.0, 60.0)
    assert zs.main([*args, "--curve", "5,0,10", "--curve_row", "TSL"]) == 0
    with open(tmp_path / "res" / "curve.csv") as f:
        rows = list(csv.DictReader(f))
    # de has 12 train sentences: 5, 10 and all of its 12; es: 5, 10, 40.
    assert [(r["target_text"], float(r["sentences"])) for r in rows] == [
        ("5", 5.0), ("10", 10.0), ("0", 26.0)]
    assert [float(r["avg_f1"]) for r in rows] == pytest.approx([0.655, 0.67, 0.70])
    assert (tmp_path / "res" / "curve.png").stat().st_size > 0
    sample = (tmp_path / "out" / "data_curve" / "5" / "es" / "train.conll").read_text()
    assert sample.count("B-PER") == 5
    assert rw.run_dir(type("A", (), {"output_dir": "o"}), zs.curve_name("MTMT big", 0)) == \
        "o/runs/MTMT_big_@all"


def test_zero_shot_row_run_with_flags_after_dashes_says_so_and_keeps_its_recipe_apart(
        tmp_path, monkeypatch):
    import reproduce_zero_shot as zs

    data = _corpus(tmp_path / "data", en=30, de=12)
    out = tmp_path / "out"
    commands = []
    monkeypatch.setattr(rw.subprocess, "call", lambda cmd, **kw: commands.append(cmd) or 0)
    args = ["--data", str(data), "--teacher", "t", "--output_dir", str(out),
            "--results", str(tmp_path / "res"), "--targets", "de", "--target_text", "5"]
    # The real run_row: the flags after -- go on the command and into the run folder.
    assert zs.main([*args, "--only", "MTMT", "--", "--learning_rate=5e-5"]) == 1  # no metrics
    assert commands[0][-1] == "--learning_rate=5e-5"
    assert rw.extra_flags(str(out / "runs" / "MTMT")) == ["--learning_rate=5e-5"]
    assert rw.extra_flags(str(out / "runs" / "TSL")) == []  # no folder: none
    teacher = _entry({"en": 0.8, "de": 0.6}, 100, 400.0)
    for name, de in (("MTMT", 0.66), ("MTMT seed43", 0.50), ("TSL", 0.62), ("MTMT @all", 0.70),
                     ("MTMT @2", 0.64)):
        _fake_run(out, name, teacher, _entry({"en": 0.7, "de": de}, 100, 400.0), 1.0, 60.0)
    (out / "runs" / "MTMT_@all" / rw.EXTRA_FLAGS).write_text('["--learning_rate=5e-5"]')
    assert zs.main([*args, "--summary_only", "--seeds", "43", "--curve_row", "MTMT",
                    "--curve", "2,0"]) == 0
    with open(tmp_path / "res" / "records" / "MTMT.json") as f:
        assert json.load(f)["flags"] == ["--learning_rate=5e-5"]
    with open(tmp_path / "res" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    # The seed run, with the recipe's default learning rate, is not averaged into the row.
    assert [(r["model"], r["flags"], float(r["f1_de"])) for r in rows] == [
        ("direct transfer (teacher)", "", 0.6), ("TSL", "", 0.62),
        ("MTMT", "--learning_rate=5e-5", 0.66)]
    table = (tmp_path / "res" / "summary.md").read_text()
    assert "| MTMT (`--learning_rate=5e-5`) | 66.0 | **66.0** | +6.0 |" in table
    assert "A model with flags in brackets ran with them added to its run_distil.py" in table
    with open(tmp_path / "res" / "curve.csv") as f:  # the point of another recipe is left out
        assert [(r["target_text"], float(r["avg_f1"])) for r in csv.DictReader(f)] == [
            ("5", 0.66), ("0", 0.70)]


def test_zero_shot_teacher_letters_stay_when_a_row_is_re_run_later(tmp_path):
    import reproduce_zero_shot as zs

    def records(**finished):  # teacher id -> when its one record finished
        return {t: {"teacher": {"id": t}, "finished": f} for t, f in finished.items()}

    res = str(tmp_path / "res")
    assert zs.teacher_letters(res, records(a="2026-12-02", b="2026-12-03")) == {"a": "A", "b": "B"}
    # a's only row re-run after b's: its record is newer, but a stays A; a new teacher is C.
    assert zs.teacher_letters(res, records(a="2026-12-05", b="2026-12-03", c="2026-12-04")) == {
        "a": "A", "b": "B", "c": "C"}
    assert zs.teacher_letters(res, records(c="2026-12-04")) == {"c": "C"}  # only its own rows
    with open(tmp_path / "res" / "teachers.json") as f:
        assert json.load(f) == {"a": "A", "b": "B", "c": "C"}


def test_time_student_shapes_times_teacher_and_selected_students(tmp_path, capsys):
    import time_student_shapes as ts

    out = tmp_path / "shapes.json"
    assert ts.main(["--teacher", str(pathlib.Path(_FIXTURES) / "models" / "tiny_bert"),
                    "--shapes", "l1-h16", "--lengths", "8,4", "--rounds", "1",
                    "--output", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["model"] for r in rows] == ["teacher", "l1-h16"]
    assert rows[0]["speedup_32x8"] == 1.0 and rows[1]["speedup_32x4"] > 0
    assert rows[1]["params"] < rows[0]["params"]
    assert "| l1-h16 | " in capsys.readouterr().out


def test_mixed_precision_comparison_pairs_each_seed_with_its_float32_run(tmp_path):
    import compare_mixed_precision as cmp

    def finished(name, f1, seconds):
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        entry = {"f1": f1, "dev_f1": f1 + 0.01}
        (run / "metrics.json").write_text(json.dumps(
            {"teacher": entry, "student": entry, "wall_seconds": 600}))
        (run / "history.json").write_text(json.dumps(
            [{"stage": "logits", "seconds": s} for s in seconds]))

    finished("float32_seed1", 0.80, [40.0, 20.0])
    finished("bfloat16_seed1", 0.79, [35.0, 16.0])
    args = argparse.Namespace(
        output_dir=str(tmp_path), results=str(tmp_path / "results"))
    table = cmp.summarise(args, [(1, "float32"), (1, "bfloat16"), (2, "float32")])
    lines = table.splitlines()
    assert lines[2] == "| 1 | float32 | 81.0 | 80.0 | 81.0 | 80.0 | 20 | 10.0 min |"
    assert lines[3] == "| 1 | bfloat16 | 80.0 | 79.0 | 80.0 | 79.0 | 16 (1.25x) | 10.0 min |"
    assert len([x for x in lines if x.startswith("| 2 ")]) == 0  # not run yet
    with open(tmp_path / "results" / "summary.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["precision"] for r in rows] == ["float32", "bfloat16"]
    assert float(rows[1]["s_per_epoch_logits"]) == 16.0


def test_zero_shot_rows_reuse_a_given_teacher_and_count_its_fine_tuning(tmp_path, monkeypatch):
    import reproduce_zero_shot as zs

    data = _corpus(tmp_path / "data", en=30, de=12)
    earlier = tmp_path / "earlier"  # the run that fine-tuned the teacher, 5 min
    (earlier / "teacher").mkdir(parents=True)
    (earlier / "state.json").write_text(json.dumps({"done": {"teacher": {"seconds": 300.0}}}))
    calls = []

    def run_row(name, flags, files, args, first):  # finishes each row as if it had run
        calls.append((name, flags, first, files["train"]))
        _fake_run(tmp_path / "out", name, _entry({"en": 0.8, "de": 0.6}, 100, 400.0),
                  _entry({"en": 0.7, "de": 0.65}, 100, 400.0), 1.0, 600.0)
        given = [f.split("=", 1)[1] for f in flags if f.startswith("--teacher_checkpoint=")]
        (tmp_path / "out" / "runs" / name.replace(" ", "_") / "state.json").write_text(
            json.dumps({"settings": {"teacher": {"checkpoint": given[-1] if given else ""}}}))
        return True

    monkeypatch.setattr(zs.rw, "run_row", run_row)
    readme = tmp_path / "zero-shot.md"  # one section per table: the 2k one stays as it is
    readme.write_text(f"{zs.BEGIN}\n2k\n{zs.END}\n<!-- all:begin -->\n<!-- all:end -->\n")
    assert zs.main(["--data", str(data), "--teacher", "t", "--output_dir", str(tmp_path / "out"),
                    "--results", str(tmp_path / "res"), "--targets", "de", "--target_text", "0",
                    "--teacher_checkpoint", str(earlier / "teacher"), "--only", "MTMT",
                    "--curve_row", "MTMT", "--curve", "5", "--readme", str(readme),
                    "--section", "all", "--test_per_lang", "2000"]) == 0
    # Only the named row and its curve point run (not TSL, whose teacher is not needed), each
    # with the given teacher and as its own "first" row (no other row's teacher is appended).
    assert [c[0] for c in calls] == ["MTMT", "MTMT @5"]
    for name, flags, first, _ in calls:
        assert f"--teacher_checkpoint={earlier / 'teacher'}" in flags and first == name
        # one teacher cache for the table: the row and its curve point share what they can
        assert f"--teacher_cache_dir={tmp_path / 'out' / 'teacher_cache'}" in flags
    assert calls[0][3].endswith(f"de={tmp_path}/out/data/de/train.conll")  # all 12: the table's
    assert len(rw.data_lib.read_conll(str(tmp_path / "out" / "data" / "de" / "train.conll"))) == 12
    table = (tmp_path / "res" / "summary.md").read_text()
    assert "| direct transfer (teacher) | 60.0 | **60.0** | — | 80.0 | 0.0M | 5 min |" in table
    assert "by the earlier run whose teacher every row reuses" in table
    assert "each target language's whole train split, tags dropped" in table
    assert "2000 test sentences per language (de 1000: their whole test split)" in table
    text = readme.read_text()
    assert text.startswith(f"{zs.BEGIN}\n2k\n{zs.END}") and table.strip() in text
    # A later summary without --teacher_checkpoint still finds the teacher's fine-tuning from
    # the run's own settings (state.json): its record keeps the 5 min.
    assert zs.main(["--data", str(data), "--teacher", "t", "--output_dir", str(tmp_path / "out"),
                    "--results", str(tmp_path / "res"), "--targets", "de", "--target_text", "0",
                    "--summary_only", "--test_per_lang", "2000"]) == 0
    assert "| direct transfer (teacher) | 60.0 | **60.0** | — | 80.0 | 0.0M | 5 min |" in \
        (tmp_path / "res" / "summary.md").read_text()


def test_zero_shot_seeds_rerun_each_row_and_the_table_gives_mean_and_range(tmp_path, monkeypatch,
                                                                           capsys):
    import reproduce_zero_shot as zs

    data = _corpus(tmp_path / "data", en=30, de=12, es=12)
    assert zs.parse_seeds(" 43, 44", 42) == [43, 44]
    for bad in ("x", "43,43", "42"):
        with pytest.raises(ValueError):
            zs.parse_seeds(bad, 42)
    args = ["--data", str(data), "--teacher", "t", "--output_dir", str(tmp_path / "out"),
            "--results", str(tmp_path / "res"), "--targets", "de,es", "--target_text", "5",
            "--teacher_checkpoint", str(tmp_path / "earlier" / "teacher"), "--only", "MTMT",
            "--seeds", "43,44"]
    with pytest.raises(SystemExit):
        zs.main([*args, "--seeds", "42,43"])
    assert "differ from --seed=42" in capsys.readouterr().err
    teacher = _entry({"en": 0.8, "de": 0.6, "es": 0.7}, 100, 400.0)
    students = {"MTMT": (0.62, 0.72), "MTMT seed43": (0.60, 0.70), "MTMT seed44": (0.67, 0.71)}
    calls = []

    def run_row(name, flags, files, args, first):  # finishes each run as if it had run
        calls.append((name, [f for f in flags if f.startswith("--seed")], files["train"]))
        if name != "MTMT seed44":  # this one is still to come: the mean is over the finished
            de, es = students[name]
            _fake_run(tmp_path / "out", name, teacher,
                      _entry({"en": 0.7, "de": de, "es": es}, 100, 400.0), 1.0, 60.0)
        return True

    monkeypatch.setattr(zs.rw, "run_row", run_row)
    assert zs.main(args) == 0
    # Each seed runs the row on the same data samples; only run_distil's --seed differs.
    assert [(name, seed) for name, seed, _ in calls] == [
        ("MTMT", []), ("MTMT seed43", ["--seed=43"]), ("MTMT seed44", ["--seed=44"])]
    assert len({train for _, _, train in calls}) == 1
    with open(tmp_path / "res" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], r["seeds"]) for r in rows] == [("direct transfer (teacher)", "1"),
                                                         ("MTMT", "2")]
    assert float(rows[1]["avg_f1"]) == pytest.approx(0.66)  # (0.67 + 0.65) / 2
    assert float(rows[1]["f1_de"]) == pytest.approx(0.61)
    assert (float(rows[1]["avg_f1_min"]), float(rows[1]["avg_f1_max"])) == (0.65, 0.67)
    table = (tmp_path / "res" / "summary.md").read_text()
    assert "| MTMT | 61.0 | 71.0 | **66.0** (65.0–67.0, 2 seeds) | +1.0 | 70.0 |" in table
    assert "| direct transfer (teacher) | 60.0 | 70.0 | **65.0** | — | 80.0 |" in table
    assert "student seeds 42, 43, 44" in table
    # Seed 44 finishes: the row's mean takes it in; a seed run alone makes no row.
    _fake_run(tmp_path / "out", "MTMT seed44", teacher,
              _entry({"en": 0.7, "de": 0.67, "es": 0.71}, 100, 400.0), 1.0, 60.0)
    _fake_run(tmp_path / "out", "TSL seed43", teacher,
              _entry({"en": 0.7, "de": 0.5, "es": 0.5}, 100, 400.0), 1.0, 60.0)
    assert zs.main([*args, "--summary_only"]) == 0
    with open(tmp_path / "res" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["direct transfer (teacher)", "MTMT"]
    assert (rows[1]["seeds"], float(rows[1]["avg_f1"])) == ("3", pytest.approx(0.67))


def test_zero_shot_table_outlives_its_runs_and_keeps_each_teachers_rows_apart(tmp_path):
    import os

    import reproduce_zero_shot as zs

    args = ["--data", "x", "--teacher", "t", "--output_dir", str(tmp_path / "out"),
            "--results", str(tmp_path / "res"), "--targets", "de", "--seeds", "43",
            "--summary_only"]
    first = _entry({"en": 0.8, "de": 0.6}, 100, 400.0)
    for name, de in (("TSL", 0.62), ("MTMT", 0.63)):
        _fake_run(tmp_path / "out", name, first, _entry({"en": 0.7, "de": de}, 100, 400.0),
                  1.0, 60.0)
    assert zs.main(args) == 0
    table = (tmp_path / "res" / "summary.md").read_text()
    assert sorted(os.listdir(tmp_path / "res" / "records")) == ["MTMT.json", "TSL.json"]
    # The machine is lost with its runs: the records alone give the same table.
    for name in ("TSL", "MTMT"):
        (tmp_path / "out" / "runs" / name / "metrics.json").unlink()
    assert zs.main(args) == 0
    assert (tmp_path / "res" / "summary.md").read_text() == table
    # A new machine fine-tunes its own teacher (other test F1s): its rows follow its own direct
    # transfer, and its seed run of MTMT is not averaged with the first teacher's MTMT.
    second = _entry({"en": 0.79, "de": 0.58}, 100, 400.0)
    for name, de in (("MSD", 0.61), ("MTMT seed43", 0.50)):
        _fake_run(tmp_path / "out", name, second, _entry({"en": 0.7, "de": de}, 100, 400.0),
                  1.0, 60.0)
        later = os.path.getmtime(tmp_path / "res" / "records" / "TSL.json") + 3600
        os.utime(tmp_path / "out" / "runs" / name.replace(" ", "_") / "metrics.json",
                 (later, later))
    assert zs.main(args) == 0
    with open(tmp_path / "res" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], float(r["f1_de"])) for r in rows] == [
        ("direct transfer (teacher)", 0.6), ("TSL", 0.62), ("MTMT", 0.63),
        ("direct transfer (teacher)", 0.58), ("MSD", 0.61)]
    assert [float(r["gain"]) for r in rows] == pytest.approx([0, 0.02, 0.03, 0, 0.03])
    assert rows[0]["teacher_id"] == rows[2]["teacher_id"] != rows[3]["teacher_id"] == rows[4][
        "teacher_id"]
    table = (tmp_path / "res" / "summary.md").read_text()
    assert "| model | teacher | de | target avg | vs direct |" in table
    assert "| MTMT | A | 63.0 | **63.0** | +3.0 | 70.0 |" in table
    assert "| direct transfer (teacher) | B | 58.0 | **58.0** | — | 79.0 |" in table
    assert "| MSD | B | 61.0 | **61.0** | +3.0 | 70.0 |" in table
    assert "Teachers A, B: the same teacher recipe fine-tuned in separate runs" in table
    # The second teacher's MTMT, run in another output folder: its record goes beside the first
    # teacher's (same run name), and its row averages with that teacher's seed run only.
    _fake_run(tmp_path / "out2", "MTMT", second, _entry({"en": 0.7, "de": 0.54}, 100, 400.0),
              1.0, 60.0)
    assert zs.main([*args[:5], str(tmp_path / "out2"), *args[6:]]) == 0
    mine = zs.teacher_fingerprint(second)
    assert sorted(os.listdir(tmp_path / "res" / "records")) == [
        "MSD.json", "MTMT.json", f"MTMT@{mine}.json", "MTMT_seed43.json", "TSL.json"]
    with open(tmp_path / "res" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], float(r["f1_de"]), r["seeds"]) for r in rows] == [
        ("direct transfer (teacher)", 0.6, "1"), ("TSL", 0.62, "1"), ("MTMT", 0.63, "1"),
        ("direct transfer (teacher)", 0.58, "1"), ("MSD", 0.61, "1"),
        ("MTMT", pytest.approx(0.52), "2")]
    assert rows[5]["teacher_id"] == mine


def test_zero_shot_first_row_to_run_fine_tunes_the_teacher_unless_one_is_on_disk(tmp_path,
                                                                                 monkeypatch):
    import reproduce_zero_shot as zs

    data = _corpus(tmp_path / "data", en=30, de=12)
    out = tmp_path / "out"
    calls = []

    def run_row(name, flags, files, args, first):  # records who fine-tunes the teacher
        calls.append((name, first))
        _fake_run(out, name, _entry({"en": 0.8, "de": 0.6}, 100, 400.0),
                  _entry({"en": 0.7, "de": 0.65}, 100, 400.0), 1.0, 600.0)
        return True

    monkeypatch.setattr(zs.rw, "run_row", run_row)
    args = ["--data", str(data), "--teacher", "t", "--output_dir", str(out), "--results",
            str(tmp_path / "res"), "--targets", "de", "--target_text", "5"]
    # A fresh machine (TSL's run is gone, or never ran here): MSD, the first to run, fine-tunes
    # the teacher and MTMT reuses it; TSL is not re-run just to make a teacher.
    assert zs.main([*args, "--only", "MSD,MTMT"]) == 0
    assert calls == [("MSD", "MSD"), ("MTMT", "MSD")]
    # On a disk where a run fine-tuned the teacher (its state says so), later rows reuse it.
    (out / "runs" / "MTMT" / "state.json").write_text(
        json.dumps({"done": {"teacher": {"seconds": 300.0}}}))
    calls.clear()
    assert zs.main([*args, "--only", "TSL"]) == 0
    assert calls == [("TSL", "MTMT")]
