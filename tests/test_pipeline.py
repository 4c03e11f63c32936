"""End to end: run_distil.py with flags/smoke.cfg, resume, flag layering and clean errors."""

import csv
import io
import json
import os
import sys

import pytest

from conftest import REPO, SMOKE, in_repo, run_distil

# The smoke run most tests here read; two epochs and a checkpoint after every step, so that it is
# also the uninterrupted reference of the kill/resume test.
SMOKE_RUN = (SMOKE, "--checkpoint_every=1", "--epochs=2", "--export_formats=savedmodel,litert")


def smoke_args(out, litert: bool = True) -> tuple[str, ...]:
    run = SMOKE_RUN if litert else SMOKE_RUN[:-1]
    return (*run, f"--output_dir={out}/run", f"--export_dir={out}/exports")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    proc = run_distil(*smoke_args(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_metrics_json_follows_the_contract(smoke_run):
    out, proc = smoke_run
    with open(out / "run" / "metrics.json") as f:
        doc = json.load(f)
    assert doc["split"] == "test"
    for model in ("teacher", "student"):
        entry = doc[model]
        for key in ("f1", "precision", "recall", "accuracy", "accuracy_non_o", "params",
                    "size_mb", "ms_per_batch"):
            assert isinstance(entry[key], (int, float)), key
        assert isinstance(entry["per_type"], dict) and isinstance(entry["per_language"], dict)
        assert 0 <= entry["f1"] <= 1 and entry["params"] > 0 and entry["ms_per_batch"] > 0
    assert set(doc["teacher"]["per_type"]) <= {"PER", "LOC", "ORG"}
    assert doc["speedup"] == pytest.approx(
        doc["teacher"]["ms_per_batch"] / doc["student"]["ms_per_batch"])
    assert doc["student"]["params"] < doc["teacher"]["params"]
    assert "| teacher |" in proc.stdout and "| student |" in proc.stdout


def test_run_folder_holds_everything(smoke_run):
    out, _ = smoke_run
    run = out / "run"
    for name in ("flags.txt", "metrics.json", "state.json", "history.json", "curves.png"):
        assert (run / name).is_file(), name
    assert (run / "teacher").is_dir() and (run / "student").is_dir()
    assert any((run / "tensorboard").iterdir())
    flags_txt = (run / "flags.txt").read_text()
    assert f"--output_dir={run}" in flags_txt and "--student=l1-h16" in flags_txt
    assert (out / "exports" / "run" / "1" / "saved_model.pb").is_file()
    litert = out / "exports" / "run-litert" / "1"
    assert (litert / "model.tflite").is_file() and (litert / "assets" / "labels.txt").is_file()
    exported = json.loads((run / "state.json").read_text())["done"]["export"]
    assert exported == {"student": str(out / "exports" / "run" / "1"),
                        "student-litert": str(litert)}


def test_rerun_resumes_without_training_again(smoke_run):
    out, _ = smoke_run
    proc = run_distil(*smoke_args(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "epoch" not in proc.stderr  # nothing trained
    assert "stages finished in an earlier run" in proc.stderr
    assert not (out / "exports" / "run" / "2").exists()  # exported once
    assert not (out / "exports" / "run-litert" / "2").exists()


def test_second_student_reuses_the_fine_tuned_teacher(smoke_run, tmp_path):
    out, _ = smoke_run
    first = json.loads((out / "run" / "metrics.json").read_text())
    dev = "tests/fixtures/tiny_dev.conll"
    proc = run_distil(SMOKE, f"--output_dir={tmp_path}/run", "--export_formats=none",
                      f"--teacher_checkpoint={out}/run/teacher",
                      "--stages=labels", "--nogradual_unfreezing",
                      f"--test_file=de={dev},tests/fixtures/tiny_test.conll")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[teacher]" not in proc.stderr and "fine-tuned weights loaded" in proc.stderr
    doc = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert doc["teacher"]["dev_f1"] == pytest.approx(first["teacher"]["dev_f1"])
    assert "de" in doc["teacher"]["per_language"]
    # Another head is another model: refused with a one-line error naming the folder.
    bad = run_distil(SMOKE, f"--output_dir={tmp_path}/bad",
                     f"--teacher_checkpoint={out}/run/teacher", "--head=crf")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    last = bad.stderr.strip().splitlines()[-1]
    assert "teacher/model.json" in last and "head=softmax" in last


def test_runs_sharing_a_teacher_cache_dir_reuse_its_outputs(smoke_run, tmp_path):
    out, _ = smoke_run
    common = (SMOKE, f"--teacher_checkpoint={out}/run/teacher", "--stages=logits",
              "--nogradual_unfreezing", f"--teacher_cache_dir={tmp_path}/cache")
    runs = [run_distil(*common, f"--output_dir={tmp_path}/{name}", "--export_formats=none")
            for name in ("a", "b")]
    for proc in runs:
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(new)" in runs[0].stderr and "chunk 1/1 written" in runs[0].stderr
    assert "(reused)" in runs[1].stderr and "written" not in runs[1].stderr
    assert "no export (--export_formats=none)" in runs[0].stdout  # and nothing written:
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "cache"]
    (folder,) = os.listdir(tmp_path / "cache")  # kept after both runs, one set of outputs
    assert folder.startswith("transfer-logits-")
    a, b = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("a", "b"))
    assert b["student"]["f1"] == a["student"]["f1"]
    history = [json.loads((tmp_path / name / "history.json").read_text()) for name in "ab"]
    assert [r["train_loss"] for r in history[1]] == [r["train_loss"] for r in history[0]]


def test_later_flags_override_the_flagfile(tmp_path):
    proc = run_distil(SMOKE, f"--output_dir={tmp_path}",
                      "--train_file=does/not/exist.conll")
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "does/not/exist.conll" in last
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args,needle", [
    (["--student=teacher:7"], "the teacher has layers 0..1"),
    (["--student=teacher:x"], "write teacher:i,j,..."),
    (["--max_seq_length=4"], "--max_seq_length=4 must be between"),
    (["--teacher_layer=top"], "--teacher_layer=top"),
    (["--teacher=/nowhere/model"], "cannot load"),
])
def test_bad_flags_are_one_line_errors(tmp_path, args, needle):
    proc = run_distil(SMOKE, f"--output_dir={tmp_path}", *args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert needle in proc.stderr.strip().splitlines()[-1]
    assert "[teacher] epoch" not in proc.stderr  # found before any fine-tuning


def test_bad_data_line_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.conll"
    bad.write_text("John\tB-PER\nSmith\n", encoding="utf-8")
    proc = run_distil(SMOKE, f"--output_dir={tmp_path}/run",
                      f"--train_file={bad}")
    assert proc.returncode == 2
    assert f"{bad}:2" in proc.stderr.strip().splitlines()[-1]


def test_ready_token_classifier_teacher_is_used_as_is(tmp_path):
    # tiny_bert_ner has its own IO labels LOC ORG PER O, like jplu/tf-xlm-r-ner-40-lang.
    proc = run_distil(SMOKE, f"--output_dir={tmp_path}/run",
                      f"--export_dir={tmp_path}/exports",
                      "--teacher=tests/fixtures/models/tiny_bert_ner", "--export_teacher",
                      "--stages=labels", "--nogradual_unfreezing")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[teacher]" not in proc.stderr  # not fine-tuned
    doc = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(doc["teacher"]["per_type"]) <= {"PER", "LOC", "ORG"}
    labels = (tmp_path / "exports" / "run-teacher" / "1" / "assets" / "labels.txt").read_text()
    assert labels.split() == ["LOC", "ORG", "PER", "O"]
    student_labels = (tmp_path / "exports" / "run" / "1" / "assets" / "labels.txt").read_text()
    assert student_labels.split()[0] == "O" and "B-PER" in student_labels.split()


def test_student_with_its_own_tokenizer(smoke_run, tmp_path):
    out, _ = smoke_run
    proc = run_distil(SMOKE, f"--output_dir={tmp_path}/run", "--export_formats=none",
                      f"--teacher_checkpoint={out}/run/teacher",
                      "--student=tests/fixtures/models/tiny_bert_pt", "--student_own_tokenizer",
                      "--nogradual_unfreezing")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "stages: representations, logits, labels" in proc.stderr
    doc = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert doc["student"]["params"] == doc["teacher"]["params"]


def test_attention_crf_teacher_with_per_layer_classifiers_and_a_crf_student(tmp_path):
    import numpy as np

    from xtremedistil_tf import model_folders

    # Only the representation stage trains the student: nothing after the copy touches its
    # transition scores, so they must be the fine-tuned teacher's exactly.
    proc = run_distil(SMOKE, f"--output_dir={tmp_path}/run", f"--export_dir={tmp_path}/exports",
                      "--head=attention_crf", "--student_head=crf", "--aux_heads",
                      "--aux_from_layer=1", "--teacher_epochs=1", "--stages=representations",
                      "--nogradual_unfreezing")
    assert proc.returncode == 0, proc.stderr[-3000:]
    teacher, _ = model_folders.load_model(str(tmp_path / "run" / "teacher"), "teacher")
    student, _ = model_folders.load_model(str(tmp_path / "run" / "student"), "student")
    assert teacher.head.attention is not None and student.head.attention is None
    assert teacher.head.crf is not None and student.head.crf is not None
    # Zero-initialised, so non-zero scores are the teacher's fine-tuning, not a shared start.
    assert np.abs(teacher.head.crf.transitions.numpy()).max() > 0
    for mine, theirs in zip(student.head.crf.weights, teacher.head.crf.weights, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    # The teacher's per-layer classifiers (layer 1 of 2) were trained: their loss term counted.
    assert teacher.aux_layers == (1,) and not student.aux_layers
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    terms = [r for r in history if r["stage"] == "teacher"][0]["train_terms"]
    assert terms["aux_layers"] > 0 and terms["labels"] > 0
    assert (tmp_path / "exports" / "run" / "1" / "saved_model.pb").is_file()


def test_killed_run_resumes_where_it_stopped(smoke_run, tmp_path):
    import signal
    import time

    from xtremedistil_tf import stage_checkpoints

    # Killed (SIGKILL, by itself: always at the same point) right after the 3rd optimizer step
    # of the first logits stage and its checkpoint.
    # (No LiteRT export: it plays no part in what is compared.)
    args = smoke_args(tmp_path, litert=False)
    killed = run_distil(*args, env={stage_checkpoints.KILL_AT_ENV: "logits/top0:3"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    killed_wall = json.loads((tmp_path / "run" / "wall.json").read_text())  # its clock
    # Up to there (through the representation stage, float16 teacher hidden states), nothing
    # from TensorFlow's C++ logging, e.g. oneDNN's "supports DT_HALF only ... AVX-512".
    from xtremedistil_tf import startup
    assert not [x for x in killed.stderr.splitlines() if startup.is_noise(x)
                or startup._LOG_LINE.match(x)], killed.stderr[-3000:]
    time.sleep(0.1)
    t0 = time.time()
    again = run_distil(*args)
    second_attempt = time.time() - t0
    assert again.returncode == 0, again.stderr[-3000:]
    assert "[teacher]" not in again.stderr and "[representations]" not in again.stderr
    assert "[logits/top0] resuming at epoch 1, batch 4" in again.stderr, again.stderr[-3000:]
    assert not (tmp_path / "run" / "checkpoints" / "student_logits_top0").exists()

    # The same command never interrupted (the smoke run): same scores and the same loss in every
    # epoch of every stage (dropout is on: its masks follow the seed and the step, not the
    # process).
    reference, _ = smoke_run
    resumed, uninterrupted = ({k: json.loads((d / "run" / "metrics.json").read_text())[k]
                               for k in ("teacher", "student")} for d in (tmp_path, reference))
    for model in ("teacher", "student"):
        for key in ("f1", "precision", "recall", "accuracy", "per_language"):
            assert resumed[model][key] == uninterrupted[model][key], (model, key)
    # Its wall time counts both attempts: the killed one up to its clock's last write (at the
    # teacher's and each stage's end, and every 30 s), then the resumed one.
    doc = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert killed_wall["attempts"] == 1 and killed_wall["seconds"] > 0
    assert doc["attempts"] == 2
    assert killed_wall["seconds"] < doc["wall_seconds"] <= killed_wall["seconds"] + second_attempt
    history = [json.loads((d / "run" / "history.json").read_text())
               for d in (tmp_path, reference)]
    assert [(r["stage"], r["epoch"]) for r in history[0]] == [
        (r["stage"], r["epoch"]) for r in history[1]]
    for a, b in zip(*history):
        for key in ("train_loss", "dev_f1", "dev_loss"):
            assert a.get(key) == pytest.approx(b.get(key), rel=1e-6, abs=1e-7), (a["stage"], key)


def test_run_clock_adds_up_attempts(tmp_path):
    import time

    from xtremedistil_tf import run_state

    with run_state.RunClock(str(tmp_path), interval=0.01) as clock:
        time.sleep(0.05)
        saved = json.loads((tmp_path / "wall.json").read_text())
        assert saved["attempts"] == 1 and saved["seconds"] > 0.0  # ticking while it runs
        first = clock.seconds()
    assert first >= 0.05
    (tmp_path / "wall.json").write_text(json.dumps({"seconds": 100.0, "attempts": 3}))
    with run_state.RunClock(str(tmp_path)) as clock:  # a run resumed after a kill
        time.sleep(0.02)
    assert clock.attempts == 4 and 100.02 <= clock.seconds() < 110
    (tmp_path / "wall.json").write_text("{not json")
    with run_state.RunClock(str(tmp_path)) as clock:  # counts from here
        pass
    assert clock.attempts == 1 and clock.seconds() < 10


def test_resume_tolerates_fields_added_at_their_defaults(tmp_path):
    from xtremedistil_tf import config, run_state

    cfg = config.RunConfig(
        data=config.DataConfig(train_files=("a",), dev_files=("b",), test_files=("c",)),
        teacher=config.TeacherConfig(model="m"), student=config.StudentConfig(model="s"),
        distil=config.DistilConfig(), output_dir=str(tmp_path))
    state = run_state.RunState(str(tmp_path), cfg)
    state.mark("teacher", {"history": []})
    saved = json.loads((tmp_path / "state.json").read_text())
    del saved["settings"]["distil"]["mtmt_alpha"]  # as written by a version before that field
    del saved["settings"]["tpu"]
    (tmp_path / "state.json").write_text(json.dumps(saved))
    assert run_state.RunState(str(tmp_path), cfg).done("teacher") == {"history": []}
    import dataclasses

    changed = dataclasses.replace(cfg, distil=config.DistilConfig(mtmt_alpha=2.0))
    with pytest.raises(ValueError, match=r"distil.mtmt_alpha: \(unset\) -> 2.0"):
        run_state.RunState(str(tmp_path), changed)
    with pytest.raises(ValueError, match="teacher.model: m -> n"):
        run_state.RunState(str(tmp_path), dataclasses.replace(
            cfg, teacher=config.TeacherConfig(model="n")))


def test_teacher_cache_is_written_in_chunks_and_reused(tmp_path, monkeypatch):

    import numpy as np

    from conftest import MODELS, fixture_path
    from xtremedistil_tf import config, data, models, tagging, teacher_outputs

    sentences = data.read_unlabelled(fixture_path("tiny_unlabelled.txt"))
    assert len(sentences) == 5
    tok = models.load_tokenizer(os.path.join(MODELS, "tiny_bert"))
    teacher, _, _ = models.build_teacher(os.path.join(MODELS, "tiny_bert"), ["O", "B-X"], 0.0)
    dcfg = config.DataConfig(train_files=("x",), dev_files=("x",), test_files=("x",),
                             max_seq_length=32)
    tagger = tagging.Tagger(teacher, tok, dcfg, ["O", "B-X"], hidden_layers=(1,))
    direct = tagging.teacher_targets(tagger, tagging.tokenize(sentences, tok, None, dcfg))
    folder = str(tmp_path / "cache")
    first = teacher_outputs.cached_teacher_targets(tagger, sentences, dcfg, folder, chunk=2)
    assert sorted(os.listdir(folder)) == ["chunk-00000.npz", "chunk-00001.npz", "chunk-00002.npz"]

    def fail(*args):
        raise AssertionError("recomputed instead of read from the cache")

    monkeypatch.setattr(teacher_outputs, "teacher_targets", fail)
    again = teacher_outputs.cached_teacher_targets(tagger, sentences, dcfg, folder, chunk=2)
    for key in ("teacher_logits", "teacher_hidden"):
        assert len(direct[key]) == len(first[key]) == len(again[key]) == 5
        for a, b, c in zip(direct[key], first[key], again[key], strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)
            np.testing.assert_array_equal(b, c)
            assert b.dtype == c.dtype


def test_evaluate_exports_scores_each_export_like_the_run(smoke_run, tmp_path):
    """scripts/evaluate_exports.py: the SavedModel tags the test set as the run's model did."""
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    import evaluate_exports

    out, _ = smoke_run
    with open(out / "run" / "metrics.json") as f:
        run_f1 = json.load(f)["student"]["f1"]
    stem = str(tmp_path / "exports")
    with in_repo(io.StringIO(), io.StringIO()):
        assert evaluate_exports.main(["--run_dir", str(out / "run"), "--output", stem,
                                      "--formats", "savedmodel", "--trim"]) == 0
    with open(stem + ".csv", encoding="utf-8") as f:
        rows = {r["export"]: r for r in csv.DictReader(f)}
    assert list(rows) == ["run", "savedmodel", "savedmodel_trimmed"]
    assert float(rows["savedmodel"]["f1"]) == pytest.approx(run_f1, abs=1e-9)
    assert float(rows["savedmodel"]["same_tags"]) == 1.0
    assert int(rows["savedmodel_trimmed"]["vocab"]) < int(rows["savedmodel"]["vocab"])
    assert 0 < float(rows["savedmodel_trimmed"]["model_mb"]) < float(rows["savedmodel"]["model_mb"])
    assert "| SavedModel float32, trimmed vocabulary |" in open(stem + ".md").read()
