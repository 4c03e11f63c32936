"""A table of malformed inputs: each stops run_distil.py with one line naming file:line."""

import json
import subprocess
import sys

import pytest

from conftest import REPO

GOOD = "John\tB-PER\nSmith\tI-PER\nof\tO\nAcme\tB-ORG\nCorp\tI-ORG\nvisited\tO\nNew\tB-LOC\nYork\tI-LOC\n\n"

# name -> (file contents (str or bytes) or None, extra flags, what the error line must contain)
CASES = {
    "not_utf8": (b"John\tB-PER\nM\xfcller\tI-PER\n\n", [], ["train.conll", "byte"]),
    "one_column": ("John\tB-PER\nSmith\n\n", [], ["train.conll:2"]),
    "bad_tag": ("John\tB-PER\nSmith\tX-PER\n\n", [], ["train.conll:2", "X-PER"]),
    "empty_file": ("", [], ["train.conll"]),
    "blank_lines_only": ("\n\n\t\n", [], ["train.conll"]),
    "column_count_changes": ("John\tNNP\tB-PER\nSmith\tI-PER\n\n", [], ["train.conll:2"]),
    "dev_label_unknown": (None, ["--dev_file={bad_dev}"], ["dev.conll:2", "B-MISC"]),
    "missing_train_file": (None, ["--train_file={tmp}/nope.conll"], ["nope.conll"]),
    "missing_transfer_file": (None, ["--transfer_file={tmp}/nope.txt"], ["nope.txt"]),
    "missing_teacher": (None, ["--teacher={tmp}/no_model"], ["no_model"]),
    "teacher_labels_unmappable": (
        GOOD + "Paris\tB-MISC\n\n", ["--teacher=tests/fixtures/models/tiny_bert_ner"],
        ["MISC", "teacher"]),
    "window_too_small": (
        GOOD + "Supercalifragilisticexpialidocious\tB-PER\n\n",
        ["--max_seq_length=8", "--speed_seq_length=8"], ["train.conll:10", "--max_seq_length"]),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("malformed")
    bad_dev = tmp / "dev.conll"
    bad_dev.write_text("Paris\tB-LOC\nfair\tB-MISC\n\n", encoding="utf-8")
    argvs = []
    for name, (content, extra, _) in CASES.items():
        folder = tmp / name
        folder.mkdir()
        train = folder / "train.conll"
        if content is None:
            train.write_text(GOOD, encoding="utf-8")
        elif isinstance(content, bytes):
            train.write_bytes(content)
        else:
            train.write_text(content, encoding="utf-8")
        argvs.append(["--flagfile=flags/smoke.cfg", f"--train_file={train}",
                      f"--output_dir={folder}/run"]
                     + [e.format(tmp=tmp, bad_dev=bad_dev) for e in extra])
    cases_file = tmp / "cases.json"
    cases_file.write_text(json.dumps(argvs))
    proc = subprocess.run([sys.executable, "tests/run_cases.py", str(cases_file)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(zip(CASES, json.loads(proc.stdout.strip().splitlines()[-1])))


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_input_is_one_clear_line(results, name):
    result = results[name]
    assert result["rc"] == 2, result["stderr"][-2000:]
    assert "Traceback" not in result["stderr"]
    lines = [ln for ln in result["stderr"].splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, result["stderr"][-2000:]
    for needle in CASES[name][2]:
        assert needle in lines[0], lines[0]
