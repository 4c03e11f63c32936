"""Cross-lingual distillers (TSL, MSD, MTMT) and the zero-shot protocol.

Losses are checked against independent numpy references written from the papers' formulas;
the pipeline runs each strategy on top of flags/smoke.cfg; the zero-shot protocol is checked to
never let target-language labels into training.
"""

import json

import numpy as np
import pytest
import tensorflow as tf

from xtremedistil_tf import config, labels as labels_lib, losses, objectives, run_data, stages
from conftest import SMOKE, fixture_path, run_distil


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _cos(a, b):
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _mmd2_reference(x, y, mul=2.0, num=5):
    total = np.concatenate([x, y]).astype(np.float64)
    n, m = len(total), len(x)
    dist = np.array([[((a - b) ** 2).sum() for b in total] for a in total])
    bandwidth = dist.sum() / (n * n - n) / mul ** (num // 2)
    k = sum(np.exp(-dist / (bandwidth * mul**i)) for i in range(num))
    return k[:m, :m].mean() + k[m:, m:].mean() - k[:m, m:].mean() - k[m:, :m].mean()


def test_mmd2_matches_reference_and_vanishes_on_equal_samples():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4)).astype(np.float32)
    y = (rng.normal(size=(4, 4)) + 1.5).astype(np.float32)
    assert float(losses.mmd2(x, y)) == pytest.approx(_mmd2_reference(x, y), rel=1e-4)
    assert abs(float(losses.mmd2(x, x))) < 1e-5
    near = float(losses.mmd2(x, x + 0.01))
    assert 0 <= near < float(losses.mmd2(x, y))


def test_mmd2_gradient_pulls_samples_together():
    x = tf.constant(np.random.default_rng(1).normal(size=(5, 3)), tf.float32)
    y = tf.Variable(x + 2.0)
    with tf.GradientTape() as tape:
        loss = losses.mmd2(x, y)
    y.assign_sub(0.5 * tape.gradient(loss, y))
    assert float(losses.mmd2(x, y)) < float(loss)


def _mtmt_reference(q, p, h, v, alpha):
    n = len(p)
    j = (np.arange(n) + max(1, n // 2)) % n
    t = _sigmoid(_cos(v, v[j]))
    s = _sigmoid(_cos(h, h[j]))
    conf = p.max(-1) ** 2
    beta = (2 * t - 1) ** 2
    gamma = 1 - np.abs(_sigmoid(_cos(p, p[j])) - t)
    bce = -(t * np.log(s) + (1 - t) * np.log(1 - s))
    err = ((q - p) ** 2).sum(-1)
    return (alpha * np.mean(gamma * beta * bce) + 0.5 * np.mean(gamma * conf * err)
            + 0.5 * np.mean(gamma * conf[j] * err[j]))


def test_mtmt_loss_matches_the_papers_weighting():
    rng = np.random.default_rng(2)
    n, k = 7, 5
    p = rng.dirichlet(np.ones(k), size=n).astype(np.float32)
    q = rng.dirichlet(np.ones(k), size=n).astype(np.float32)
    h = rng.normal(size=(n, 6)).astype(np.float32)
    v = rng.normal(size=(n, 8)).astype(np.float32)
    got = float(losses.mtmt_loss(q, p, h, v, alpha=0.7))
    assert got == pytest.approx(_mtmt_reference(q, p, h, v, 0.7), rel=1e-4)
    # A student equal to its teachers still pays the similarity BCE's entropy, nothing else.
    same = float(losses.mtmt_loss(p, p, v, v, alpha=0.0))
    assert same == pytest.approx(0.0, abs=1e-7)
    assert float(losses.mtmt_loss(q[:1], p[:1], h[:1], v[:1])) == 0.0  # no pair


def test_balanced_bce_weights_both_classes_equally():
    pred = tf.constant([0.9, 0.8, 0.7, 0.2])
    same = tf.constant([True, True, True, False])
    bce = -np.log([0.9, 0.8, 0.7, 0.8])
    expected = 0.5 * bce[:3].mean() + 0.5 * bce[3]
    assert float(losses.balanced_bce(pred, same)) == pytest.approx(expected, rel=1e-5)


def test_prob_mse_compares_distributions():
    s = tf.constant([[[2.0, 0.0], [0.0, 0.0]]])
    t = tf.constant([[[0.0, 0.0], [5.0, 5.0]]])
    mask = tf.constant([[1.0, 1.0]])
    p = np.exp([2.0, 0.0]) / np.exp([2.0, 0.0]).sum()
    expected = (((p - 0.5) ** 2).mean() + 0.0) / 2
    assert float(losses.prob_mse(s, t, mask)) == pytest.approx(expected, rel=1e-5)


def test_label_types_group_b_and_i():
    assert labels_lib.label_types(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]) == (0, 1, 1, 2, 2)
    assert labels_lib.label_types(["LOC", "O", "PER"]) == (0, 1, 2)


def test_msd_layer_pairs_for_equal_and_shallower_students():
    aux = tuple(range(4, 12))  # a 12-layer teacher with classifiers on layers 4..11
    assert stages.msd_layer_pairs(aux, 12, 12) == (aux, tuple(range(8)))
    student, positions = stages.msd_layer_pairs(aux, 12, 6)
    assert student == (2, 3, 4, 5) and [aux[i] for i in positions] == [4, 6, 8, 10]
    assert stages.msd_layer_pairs((1,), 2, 1) == ((), ())


def test_strategy_schedules_are_one_stage_on_target_text():
    cfg = config.DistilConfig()
    for strategy in ("tsl", "mtmt"):
        (stage,) = stages.build_schedule(cfg, 3, False, strategy)
        assert stage.objective == strategy and stage.data == "target"
        assert {"embeddings", "block:0", "block:2", "head"} <= set(stage.trainable)
    (msd,) = stages.build_schedule(cfg, 3, True, "msd", aux=True)
    assert "aux" in msd.trainable and "embeddings" not in msd.trainable


# --------------------------------------------------------------------------- zero-shot data


def _data_config(**kw):
    base = dict(train_files=(f"en={fixture_path('tiny_train.conll')}",),
                dev_files=(f"en={fixture_path('tiny_dev.conll')}",),
                test_files=(f"en={fixture_path('tiny_test.conll')}",
                            f"de={fixture_path('tiny_de_test.conll')}"),
                transfer_files=(f"de={fixture_path('tiny_de_unlabelled.txt')}",),
                source_lang="en")
    base.update(kw)
    return config.DataConfig(**base)


def test_zero_shot_split_keeps_target_labels_out_of_training():
    cfg = _data_config(train_files=(f"en={fixture_path('tiny_train.conll')}",
                                    f"de={fixture_path('tiny_de_test.conll')}"))
    loaded = run_data.load_data(cfg)
    assert loaded.config.target_langs == ("de",)  # inferred: every other language
    assert {s.lang for s in loaded.splits["train"]} == {"en"}
    assert {s.lang for s in loaded.splits["dev"]} == {"en"}
    target = loaded.unlabelled["target"]
    assert {s.lang for s in target} == {"de"} and all(s.tags is None for s in target)
    assert len(target) == 8 + 6  # transfer text + the German training file, tags dropped
    assert all(s.tags is None for s in loaded.unlabelled["transfer"])
    assert {s.lang for s in loaded.splits["test"]} == {"en", "de"}


@pytest.mark.parametrize("change,needle", [
    (dict(train_files=(fixture_path("tiny_train.conll"),)), "without a language"),
    (dict(target_langs=("de", "es")), "no es text for target language es"),
    (dict(test_files=(f"en={fixture_path('tiny_test.conll')}",)), "no de test sentences"),
    (dict(target_langs=("fr",), transfer_files=(f"de={fixture_path('tiny_de_unlabelled.txt')}",)),
     "language de is neither"),
    (dict(transfer_files=()), "no text in a language other than en"),
])
def test_zero_shot_data_errors_say_what_to_fix(change, needle):
    with pytest.raises(ValueError, match=needle):
        run_data.load_data(_data_config(**change))


def test_strategy_settings_are_checked():
    data = _data_config()
    teacher = config.TeacherConfig(model="m")
    student = config.StudentConfig(model="l1-h16")
    distil = config.DistilConfig()
    run = dict(data=data, teacher=teacher, student=student, distil=distil, output_dir="o")
    with pytest.raises(ValueError, match="--aux_heads"):
        config.RunConfig(**run, strategy="msd")
    with pytest.raises(ValueError, match="--source_lang"):
        config.RunConfig(**{**run, "data": _data_config(source_lang="")}, strategy="tsl")
    with pytest.raises(ValueError, match="softmax"):
        config.RunConfig(**{**run, "student": config.StudentConfig(model="x", head="crf")},
                         strategy="mtmt")
    config.RunConfig(**run, strategy="tsl")


# --------------------------------------------------------------------------- end to end


def strategy_run(out, strategy, *extra):
    """flags/smoke.cfg + flags/STRATEGY.cfg for one epoch in `out` -> (out, process)."""
    proc = run_distil(SMOKE, f"--flagfile=flags/{strategy}.cfg", f"--output_dir={out}/run",
                      f"--export_dir={out}/exports", "--epochs=1", *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def german_train_file(german: str) -> str:
    """A --train_file with English and a German file whose tags the zero-shot split drops."""
    return f"--train_file=en={fixture_path('tiny_train.conll')},de={german}"


@pytest.fixture(scope="module")
def tsl_run(tmp_path_factory):
    """TSL whose German target also comes as a tagged file (tiny_de_test.conll)."""
    return strategy_run(tmp_path_factory.mktemp("tsl"), "tsl",
                        german_train_file(fixture_path("tiny_de_test.conll")))


@pytest.mark.parametrize("strategy,extra", [
    ("tsl", None),  # the tsl_run fixture
    ("msd", ["--student=l2-h16"]),  # two blocks: one per-layer channel besides the main one
    ("mtmt", []),
])
def test_strategy_runs_on_smoke_and_scores_every_target(request, tmp_path, strategy, extra):
    out, proc = (request.getfixturevalue("tsl_run") if extra is None
                 else strategy_run(tmp_path, strategy, *extra))
    doc = json.loads((out / "run" / "metrics.json").read_text())
    assert doc["protocol"]["source_lang"] == "en" and doc["protocol"]["target_langs"] == ["de"]
    assert "en dev only" in doc["protocol"]["model_choice"]
    for model in ("teacher", "student"):
        assert doc[model]["target_avg_f1"] == doc[model]["per_language"]["de"]["f1"]
    assert f"stages: {strategy}" in proc.stderr and "model choice: en dev only" in proc.stdout
    assert "| model | de | en | target avg |" in proc.stdout
    assert (out / "exports" / "run" / "1" / "saved_model.pb").is_file()
    # Every term of the distiller's loss was active (MSD: outputs, paired layers, both MMD²).
    history = json.loads((out / "run" / "history.json").read_text())
    terms = [r for r in history if r["stage"] == strategy][0]["train_terms"]
    assert tuple(terms) == objectives.get(strategy).term_names
    assert all(v > 0 for v in terms.values()), terms
    if strategy == "mtmt":
        assert "[similarity_teacher] epoch 2/2" in proc.stderr
        assert (out / "run" / "similarity_teacher" / "model.json").is_file()


def test_target_labels_never_reach_training(tsl_run, tmp_path):
    """The TSL run again, the German training file's tags scrambled: the student must come out
    identical (target tags are dropped before anything trains)."""
    lines = open(fixture_path("tiny_de_test.conll"), encoding="utf-8").read().splitlines()
    tags = ["B-PER", "O", "I-LOC", "B-ORG"]
    scrambled = tmp_path / "de_scrambled.conll"
    scrambled.write_text("\n".join(f"{ln.split()[0]}\t{tags[i % 4]}" if ln else ""
                                   for i, ln in enumerate(lines)) + "\n", encoding="utf-8")
    assert scrambled.read_text(encoding="utf-8") != "\n".join(lines) + "\n"
    strategy_run(tmp_path, "tsl", german_train_file(str(scrambled)))
    results = [json.loads((out / "run" / "metrics.json").read_text())
               for out in (tsl_run[0], tmp_path)]
    for model in ("teacher", "student"):
        for key in ("f1", "dev_f1", "accuracy", "target_avg_f1"):
            assert results[0][model][key] == results[1][model][key], (model, key)
    histories = [[{k: v for k, v in row.items() if k not in ("seconds", "peak_rss_mb")}
                  for row in json.loads((out / "run" / "history.json").read_text())]
                 for out in (tsl_run[0], tmp_path)]
    assert histories[0] == histories[1]  # every loss and dev score of every epoch
