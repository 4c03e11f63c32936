"""A table of malformed inputs: each stops run_distil.py with one line naming file:line."""

import json

import pytest

from conftest import SMOKE, run_distil

GOOD = ("John\tB-PER\nSmith\tI-PER\nof\tO\nAcme\tB-ORG\nCorp\tI-ORG\nvisited\tO\n"
        "New\tB-LOC\nYork\tI-LOC\n\n")

# name -> (file contents (str or bytes) or None, extra flags, what the error line must contain)
CASES = {
    "not_utf8": (b"John\tB-PER\nM\xfcller\tI-PER\n\n", [], ["train.conll", "byte"]),
    "one_column": ("John\tB-PER\nSmith\n\n", [], ["train.conll:2"]),
    "bad_tag": ("John\tB-PER\nSmith\tX-PER\n\n", [], ["train.conll:2", "X-PER"]),
    "empty_file": ("", [], ["train.conll"]),
    # Tags that would otherwise parse as something else (see labels.malformed_tag).
    "empty_type": ("John\tB-PER\nSmith\tI-PER\n\nParis\tB-\n\n", [],
                   ["train.conll:4", "'B-'", "B-TYPE"]),
    "type_with_space": ("John\tB-PER\nSmith\tI-NEW TYPE\n\n", [],
                        ["train.conll:2", "I-NEW TYPE", "I-NEW_TYPE"]),
    "prefix_without_hyphen": ("John\tBPER\nSmith\tIPER\nof\tO\n\n", [],
                              ["train.conll:1", "write B-PER and I-PER"]),
    "lone_hyphen": (GOOD + "-\t-\n\n", [], ["train.conll:10", "'-'"]),
    "dev_empty_type": (None, ["--dev_file={bad_dev_type}"], ["dev_type.conll:2", "'S-'"]),
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
    # Impossible students and distillations: caught before the teacher fine-tunes.
    "student_width_not_divisible_by_heads": (None, ["--student=l2-h200"], ["l2-h200", "heads"]),
    "student_without_blocks": (None, ["--student=l0-h64"], ["l0-h64", "1 block"]),
    "student_folder_without_config": (None, ["--student={tmp}/no_student"], ["no_student"]),
    "student_positions_too_few": (
        None, ["--student={tmp}/short_student", "--max_seq_length=100"],
        ["100", "64 positions", "student"]),
    "teacher_positions_too_few": (None, ["--max_seq_length=600"], ["600", "128 positions",
                                                                    "teacher"]),
    "teacher_layer_out_of_range": (None, ["--teacher_layer=7"], ["--teacher_layer=7", "0..2"]),
    "cut_layer_out_of_range": (None, ["--student=teacher:0,5"], ["teacher:0,5", "[5]"]),
    "all_student_blocks_frozen": (None, ["--freeze_bottom_blocks=1"],
                                  ["--freeze_bottom_blocks=1", "1 blocks", "at most 0"]),
}

# The errors above must come before any training: none of their runs may fine-tune the teacher.
BEFORE_TRAINING = ("student_width_not_divisible_by_heads", "student_without_blocks",
                   "student_folder_without_config", "student_positions_too_few",
                   "teacher_positions_too_few", "teacher_layer_out_of_range",
                   "cut_layer_out_of_range", "all_student_blocks_frozen")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("malformed")
    bad_dev = tmp / "dev.conll"
    bad_dev.write_text("Paris\tB-LOC\nfair\tB-MISC\n\n", encoding="utf-8")
    bad_dev_type = tmp / "dev_type.conll"
    bad_dev_type.write_text("Paris\tB-LOC\nfair\tS-\n\n", encoding="utf-8")
    short = tmp / "short_student"  # a BERT whose position table is shorter than the teacher's
    short.mkdir()
    (short / "config.json").write_text(json.dumps({
        "model_type": "bert", "hidden_size": 32, "num_attention_heads": 2,
        "num_hidden_layers": 2, "intermediate_size": 64, "vocab_size": 185,
        "max_position_embeddings": 64}), encoding="utf-8")
    argvs = {}
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
        argvs[name] = ([SMOKE, f"--train_file={train}", f"--output_dir={folder}/run"]
                       + [e.format(tmp=tmp, bad_dev=bad_dev, bad_dev_type=bad_dev_type)
                          for e in extra])
    done = {}

    def result(name):
        """The case's run (in this process, once) -> {"rc", "stderr"}."""
        if name not in done:
            proc = run_distil(*argvs[name])
            done[name] = {"rc": proc.returncode, "stderr": proc.stderr}
        return done[name]

    return result


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_input_is_one_clear_line(results, name):
    result = results(name)
    assert result["rc"] == 2, result["stderr"][-2000:]
    assert "Traceback" not in result["stderr"]
    lines = [ln for ln in result["stderr"].splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, result["stderr"][-2000:]
    for needle in CASES[name][2]:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("name", BEFORE_TRAINING)
def test_impossible_student_fails_before_the_teacher_trains(results, name):
    stderr = results(name)["stderr"]
    assert "[teacher]" not in stderr, stderr[-2000:]
