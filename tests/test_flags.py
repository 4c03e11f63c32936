"""One set of defaults: run_distil.py's flags default to the config dataclasses' defaults."""

import copy
import dataclasses
import json
import os
import re
import types

from absl import app  # noqa: F401  (absl's own flags, which run_distil.py accepts too)

from conftest import REPO
from xtremedistil_tf import config, flags as xflags

ASSETS = types.SimpleNamespace(train_file="train.conll", dev_file="dev.conll",
                               test_file="test.conll", teacher_dir="teacher")


def _parsed(*argv: str):
    values = copy.deepcopy(xflags.FLAGS)
    values.unparse_flags()
    values(["run_distil.py", *argv])
    return values


def _defaults() -> config.RunConfig:
    return config.RunConfig(
        data=config.DataConfig(train_files=("train.conll",), dev_files=("dev.conll",),
                               test_files=("test.conll",)),
        teacher=config.TeacherConfig(model="teacher"), student=config.StudentConfig(),
        distil=config.DistilConfig())


def test_no_flags_give_the_config_defaults():
    assert xflags.configs_from_flags(ASSETS, flag_values=_parsed()) == _defaults()


def test_the_command_line_values_users_rely_on():
    cfg = _defaults()
    assert (cfg.data.batch_size, cfg.teacher.learning_rate, cfg.distil.learning_rate,
            cfg.distil.epochs, cfg.teacher.epochs) == (8, 3e-4, 2e-4, 3, 3)
    # The embedded default's recipe (docs/default-run.md: how it was chosen).
    assert (cfg.teacher.freeze_embeddings, cfg.student.freeze_embeddings,
            cfg.distil.gradual_unfreezing) == (True, True, False)
    assert (cfg.teacher.head_init, cfg.teacher.o_weight, cfg.distil.o_weight) == (
        "prior", 0.5, 0.5)
    assert (cfg.distil.stages, cfg.distil.logit_loss) == (("auto",), "kl")
    assert (cfg.student.model, cfg.output_dir) == ("teacher:0,2,4", "runs/default")


def test_flags_shared_by_two_configs_have_one_default():
    # --dropout, --warmup_ratio and --weight_decay each fill two configs.
    assert config.TeacherConfig.dropout == config.StudentConfig.dropout
    assert config.TeacherConfig.warmup_ratio == config.DistilConfig.warmup_ratio
    assert config.TeacherConfig.weight_decay == config.DistilConfig.weight_decay


def test_flag_values_are_read_from_the_given_parse_not_the_module_flags():
    cfg = xflags.configs_from_flags(ASSETS, flag_values=_parsed("--batch_size=3", "--epochs=5"))
    assert (cfg.data.batch_size, cfg.distil.epochs) == (3, 5)
    assert not xflags.FLAGS.is_parsed() or xflags.FLAGS.batch_size != 3


def test_runs_saved_by_older_versions_still_resume():
    # Settings as an older version saved them for a default run: the same values, without the
    # fields added since (they count as unchanged while the new run keeps their defaults).
    saved = json.loads(json.dumps(dataclasses.asdict(_defaults())))
    for key in ("skip_nonfinite_batches", "checkpoint_every", "per_replica_batch_size"):
        del saved[key]
    del saved["student"]["embeddings"]
    cfg = xflags.configs_from_flags(ASSETS, flag_values=_parsed())
    assert config.setting_changes(saved, cfg) == []
    # A run saved with other values than today's defaults is not resumed by a default run.
    saved["data"]["batch_size"], saved["distil"]["epochs"] = 32, 2
    assert config.setting_changes(saved, cfg) == ["data.batch_size: 32 -> 8",
                                                  "distil.epochs: 2 -> 3"]


def test_runs_saved_before_the_class_handling_flags_resume_with_their_old_behaviour():
    # Saved before --teacher_head_init / --teacher_o_weight / --o_weight existed: those runs had
    # a zero bias and no O weight, so only a command asking for that resumes them.
    saved = json.loads(json.dumps(dataclasses.asdict(_defaults())))
    for part, key in (("teacher", "head_init"), ("teacher", "o_weight"), ("distil", "o_weight")):
        del saved[part][key]
    assert config.setting_changes(saved, _defaults()) == [
        "teacher.head_init: (unset) -> prior", "teacher.o_weight: (unset) -> 0.5",
        "distil.o_weight: (unset) -> 0.5"]
    old = xflags.configs_from_flags(ASSETS, flag_values=_parsed(
        "--teacher_head_init=zero", "--teacher_o_weight=1", "--o_weight=1"))
    assert config.setting_changes(saved, old) == []


def test_class_handling_flags_reach_both_configs():
    cfg = xflags.configs_from_flags(ASSETS, flag_values=_parsed(
        "--teacher_head_init=zero", "--teacher_o_weight=0.75", "--o_weight=0.25"))
    assert (cfg.teacher.head_init, cfg.teacher.o_weight, cfg.distil.o_weight) == (
        "zero", 0.75, 0.25)
    # A CRF head ignores the O weight (it scores tag sequences), so the defaults suit it too.
    crf = xflags.configs_from_flags(ASSETS, flag_values=_parsed("--head=crf",
                                                                "--student_head=crf"))
    assert crf.teacher.o_weight == crf.distil.o_weight == 0.5
    for bad in ("--o_weight=0", "--teacher_o_weight=1.5"):
        try:
            xflags.configs_from_flags(ASSETS, flag_values=_parsed(bad))
        except ValueError as e:
            assert "(0, 1]" in str(e), e
        else:
            raise AssertionError(f"{bad} accepted")


def test_export_formats_none_exports_nothing_and_refuses_export_options():
    cfg = xflags.configs_from_flags(ASSETS, flag_values=_parsed("--export_formats=none"))
    assert cfg.export_formats == ()
    for extra in ("--trim_vocab", "--export_teacher"):
        try:
            xflags.configs_from_flags(ASSETS, flag_values=_parsed("--export_formats=none", extra))
        except ValueError as e:
            assert extra in str(e)
        else:
            raise AssertionError(f"{extra} accepted")


def _documented_value(text: str):
    """A default as docs/flags.md writes it -> a Python value, or None for a description."""
    text = text.strip()
    if text.startswith("`") and text.endswith("`"):
        return text.strip("`")
    if text in ("true", "false"):
        return text == "true"
    if text == "none":
        return ""
    try:
        return float(text)
    except ValueError:
        return None  # "embedded WNUT-2016", "output dir name": described, not a value


def _comparable(default):
    if isinstance(default, list):
        return ",".join(default)
    if default is None:
        return ""
    return float(default) if isinstance(default, (int, float)) and not isinstance(
        default, bool) else default


def test_the_defaults_in_docs_flags_md_are_the_flags_defaults():
    with open(os.path.join(REPO, "docs", "flags.md"), encoding="utf-8") as f:
        rows = [line.split("|")[1:3] for line in f if line.startswith("| `--")]
    checked = 0
    for names_cell, default_cell in rows:
        names = re.findall(r"`--(\w+)`", names_cell)
        values = [v for v in default_cell.split(", ")]
        assert len(values) in (1, len(names)), f"docs/flags.md: {names_cell}: one default each"
        values = values * len(names) if len(values) == 1 else values
        for name, text in zip(names, values, strict=True):
            assert name in xflags.FLAGS, f"docs/flags.md documents --{name}, which is no flag"
            documented = _documented_value(text)
            if documented is not None:
                assert documented == _comparable(xflags.FLAGS[name].default), (
                    f"docs/flags.md: --{name} defaults to {xflags.FLAGS[name].default!r}, "
                    f"not {text.strip()}")
                checked += 1
    assert checked > 40


def test_base_cfg_spells_out_the_defaults():
    with open(os.path.join(REPO, "flags", "base.cfg"), encoding="utf-8") as f:
        lines = [x.strip() for x in f if x.strip() and not x.startswith("#")]
    for line in lines:
        name, eq, value = line[2:].partition("=")
        if not eq:  # --flag / --noflag
            value = "false" if name not in xflags.FLAGS else "true"
            name = name if name in xflags.FLAGS else name[2:]
        default = xflags.FLAGS[name].default
        parsed = xflags.FLAGS[name].parser.parse(value) if not isinstance(default, bool) else (
            value == "true")
        assert parsed == default, f"flags/base.cfg: --{name}={value}, the default is {default!r}"
