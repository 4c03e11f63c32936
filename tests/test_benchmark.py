"""The benchmark's arithmetic and outputs (no timing assertions: timings belong in benchmarks)."""

import csv
import gc
import math
import os

import numpy as np
import pytest

from conftest import MODELS
from xtremedistil_tf import benchmark, benchmark_models, benchmark_modes, peers

import tensorflow as tf

TINY = os.path.join(MODELS, "tiny_bert")
REQUIRED = ("model", "mode", "dtype", "batch_size", "seq_length", "tokens_per_s",
            "ms_per_batch_p50", "ms_per_batch_p95", "gflops_per_token", "mfu", "peak_gflops",
            "params", "size_mb", "sentences_per_s", "speedup_vs_first_model")


def _matmul_flops(m, k, n):
    return 2 * m * k * n


def test_flops_per_token_matches_hand_count():
    # One sequence of T tokens through L layers, written out matmul by matmul.
    L, H, F, T, K, heads = 2, 4, 8, 3, 5, 2
    d = H // heads
    per_layer = (
        4 * _matmul_flops(T, H, H)  # Q, K, V, attention output projections
        + heads * _matmul_flops(T, d, T)  # scores Q Kᵀ per head
        + heads * _matmul_flops(T, T, d)  # weights × V per head
        + _matmul_flops(T, H, F) + _matmul_flops(T, F, H)  # feed-forward
    )
    total = L * per_layer + _matmul_flops(T, H, K)  # + classifier
    assert benchmark_models.flops_per_token(L, H, F, T, K) == pytest.approx(total / T)


def test_flops_per_token_of_bert_base_is_about_170_mflops():
    # 12 × (2·(4·768² + 2·768·3072) + 4·128·768) + 2·768·9 ≈ 174.6 MFLOPs at 128 tokens.
    mflops = benchmark_models.flops_per_token(12, 768, 3072, 128, 9) / 1e6
    assert mflops == pytest.approx(174.6, abs=0.1)


def test_mfu_is_achieved_over_peak():
    # 1000 tokens/s × 0.05 GFLOP/token = 50 GFLOP/s achieved; 50 / 200 = 25 %.
    assert benchmark_models.mfu(1000.0, 0.05, 200.0) == pytest.approx(0.25)
    assert math.isnan(benchmark_models.mfu(1000.0, 0.05, 0.0))


def test_summarise_times_uses_p50_for_throughput():
    s = benchmark_models.summarise_times([10.0, 20.0, 30.0, 40.0, 50.0], batch_size=2, seq_length=8)
    assert s["ms_per_batch_p50"] == 30.0
    assert s["ms_per_batch_p95"] == pytest.approx(48.0)
    assert s["sentences_per_s"] == pytest.approx(2 / 0.03)
    assert s["tokens_per_s"] == pytest.approx(16 / 0.03)


@pytest.mark.parametrize("field,value", [("modes", ("jit",)), ("dtypes", ("float16",)),
                                         ("models", ("no-such-model",)), ("repeats", 0),
                                         ("batch_sizes", (0,)), ("peers", ("tensorrt",))])
def test_config_rejects_bad_values(tmp_path, field, value):
    with pytest.raises(ValueError):
        benchmark.BenchmarkConfig(output_dir=str(tmp_path), **{field: value})


def test_presets_match_hub_shapes():
    kind, cfg = benchmark_models.PRESETS["xtremedistil-l6-h256"]
    assert (kind, cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"],
            cfg["intermediate_size"], cfg["vocab_size"]) == ("bert", 6, 256, 8, 1024, 30522)
    assert benchmark_models.PRESETS["mbert-base"][1]["vocab_size"] == 119547
    assert benchmark_models.PRESETS["xlmr-base"][1]["vocab_size"] == 250002


def test_bfloat16_policy_builds_a_bf16_model():
    tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = benchmark_models.build_model(TINY)
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    assert model.classifier.compute_dtype == "bfloat16"
    assert model.classifier.kernel.dtype == tf.float32
    ids = tf.ones((2, 8), tf.int32)
    out = benchmark_modes.forward_fn(model)(ids, ids)
    assert out["probabilities"].dtype == tf.float32
    assert out["label_ids"].shape == (2, 8)


def test_tiny_run_writes_one_row_per_combination(tmp_path):
    config = benchmark.BenchmarkConfig(
        output_dir=str(tmp_path), models=(TINY,), batch_sizes=(2,), seq_lengths=(4, 8),
        modes=("function", "saved_model"), dtypes=("float32",), repeats=2, warmup=1,
        peak_matmul_size=64, peak_repeats=2)
    benchmark.run(config, log=lambda *_: None)
    assert tf.keras.mixed_precision.global_policy().name == "float32"

    with open(tmp_path / "benchmark.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert set(REQUIRED) <= set(rows[0])
    combos = sorted((r["model"], r["mode"], r["dtype"], r["batch_size"], r["seq_length"])
                    for r in rows)
    assert combos == sorted(("tiny_bert", m, "float32", "2", t)
                            for m in ("function", "saved_model") for t in ("4", "8"))
    for r in rows:
        tokens_per_s, gflops, peak = (float(r[k]) for k in
                                      ("tokens_per_s", "gflops_per_token", "peak_gflops"))
        assert float(r["mfu"]) == pytest.approx(tokens_per_s * gflops / peak, rel=1e-6)
        assert float(r["speedup_vs_first_model"]) == pytest.approx(1.0)
        assert float(r["tokens_per_s"]) == pytest.approx(
            2 * int(r["seq_length"]) / (float(r["ms_per_batch_p50"]) / 1000), rel=1e-6)
        assert float(r["gflops_per_token"]) == pytest.approx(
            benchmark_models.flops_per_token(2, 32, 64, int(r["seq_length"]), 9) / 1e9)
        assert int(r["params"]) > 0 and float(r["peak_rss_mb"]) > 0
    md = (tmp_path / "benchmark.md").read_text()
    assert "| tiny_bert | saved_model | float32 | 2 | 8 |" in md
    assert "Teacher (tiny_bert) vs students" in md
    assert (tmp_path / "benchmark.png").stat().st_size > 0
    assert "--modes=function,saved_model" in (tmp_path / "flags.txt").read_text()


def _live_variables() -> int:
    return sum(isinstance(o, tf.Variable) for o in gc.get_objects())


def test_a_long_benchmark_keeps_no_earlier_model_alive(tmp_path, monkeypatch):
    # Every variable a timed model, its loaded SavedModel or a training step's optimizer made is
    # gone when the next model starts and after the run: memory does not grow with the number
    # of models and modes timed (see release_memory). The same model listed twice also checks
    # that each gets its own export folder.
    benchmark_models.release_memory()
    before = _live_variables()
    live = []
    time_model = benchmark._time_model

    def counting(*args):
        live.append(_live_variables())
        return time_model(*args)

    monkeypatch.setattr(benchmark, "_time_model", counting)
    config = benchmark.BenchmarkConfig(
        output_dir=str(tmp_path), models=(TINY, TINY),
        modes=("function", "saved_model", "train_logits"), batch_sizes=(2,), seq_lengths=(8,),
        repeats=1, warmup=0, peak_matmul_size=8, peak_repeats=1)
    rows = benchmark.run(config, log=lambda *_: None)
    assert len(rows) == 2 * 3
    assert live == [before, before]
    assert _live_variables() == before


def test_main_rejects_unknown_mode(tmp_path, capsys):
    assert benchmark.main(["--output_dir", str(tmp_path), "--modes", "jit"]) == 2
    assert "--modes" in capsys.readouterr().err


def test_main_rejects_a_peer_that_is_not_installed(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(benchmark, "_importable", lambda module: module != "torch")
    assert benchmark.main(["--output_dir", str(tmp_path), "--peers", "torch"]) == 2
    assert capsys.readouterr().err == (
        "error: --peers torch needs 'pip install -r requirements-peers.txt'\n")


def test_peers_are_checked_in_float32(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmark, "_importable", lambda module: True)  # torch or not
    with pytest.raises(ValueError, match="float32"):
        benchmark.BenchmarkConfig(output_dir=str(tmp_path), models=(TINY,), peers=("torch",),
                                  dtypes=("bfloat16",))


def _rows(tmp_path):
    with open(tmp_path / "benchmark.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_train_modes_time_one_step_with_three_times_the_forward_flops(tmp_path):
    config = benchmark.BenchmarkConfig(
        output_dir=str(tmp_path), models=(TINY,), batch_sizes=(2,), seq_lengths=(8,),
        modes=benchmark.TRAIN_MODES, repeats=1, warmup=0, peak_matmul_size=64, peak_repeats=2)
    benchmark.run(config, log=lambda *_: None)
    rows = {r["mode"]: r for r in _rows(tmp_path)}
    assert set(rows) == {"train_representations", "train_logits", "train_labels"}
    forward = benchmark_models.flops_per_token(2, 32, 64, 8, 9) / 1e9
    for mode in benchmark.TRAIN_MODES:
        assert float(rows[mode]["tokens_per_s"]) > 0
        assert float(rows[mode]["gflops_per_token"]) == pytest.approx(3 * forward)
        assert rows[mode]["agrees_with_tf"] == ""


def test_train_step_updates_the_stage_variables_only():
    # The representations stage trains the encoder and the projection, not the head.
    model = benchmark_models.build_model(TINY, projection_dim=48)
    step = benchmark_modes.make_train_step(model, "representations", steps=10)
    targets = benchmark_modes.random_targets("representations", np.random.default_rng(0), 2, 8,
                                       model.num_labels, 48)
    assert targets["teacher_hidden"].shape == (2, 8, 1, 48)
    head, projection = model.classifier.kernel.numpy(), model.projection.kernel.numpy()
    ids = tf.ones((2, 8), tf.int32)
    run = benchmark_modes.train_callable(step, targets)
    for _ in range(2):  # the learning rate warms up from 0 at the first step, as in training
        assert np.isfinite(run(ids, ids)["loss"].numpy())
    np.testing.assert_array_equal(model.classifier.kernel.numpy(), head)
    assert not np.array_equal(model.projection.kernel.numpy(), projection)


def test_peers_run_the_same_model_as_tensorflow(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    config = benchmark.BenchmarkConfig(
        output_dir=str(tmp_path), models=(TINY,), batch_sizes=(2,), seq_lengths=(8,),
        modes=("function",), peers=("torch", "onnxruntime"), repeats=1, warmup=0,
        peak_matmul_size=64, peak_repeats=2)
    benchmark.run(config, log=lambda *_: None)
    rows = {r["mode"]: r for r in _rows(tmp_path)}
    assert set(rows) == {"function", "torch", "onnxruntime"}
    assert rows["function"]["agrees_with_tf"] == ""
    for peer in ("torch", "onnxruntime"):
        assert float(rows[peer]["agrees_with_tf"]) >= 0.999
        assert float(rows[peer]["tokens_per_s"]) > 0
        assert rows[peer]["gflops_per_token"] == rows["function"]["gflops_per_token"]


def test_a_peer_on_other_weights_is_refused():
    torch = pytest.importorskip("torch")
    model = benchmark_models.build_model(TINY)
    ids = tf.constant(np.random.default_rng(0).integers(0, 185, (2, 8)), tf.int32)
    mask = tf.ones_like(ids)
    expected = {k: v.numpy() for k, v in benchmark_modes.forward_fn(model)(ids, mask).items()}
    tagger = peers.torch_tagger(model)
    run = peers.torch_callable(tagger, "float32", threads=1)
    ids64, mask64 = ids.numpy().astype(np.int64), mask.numpy().astype(np.int64)
    assert benchmark.check_agreement(expected, run(ids64, mask64), "torch") == 1.0
    with torch.no_grad():
        tagger.classifier.weight.neg_()
    with pytest.raises(RuntimeError, match="torch disagrees with TensorFlow"):
        benchmark.check_agreement(expected, run(ids64, mask64), "torch")


def test_litert_and_openvino_rows_are_checked_against_tensorflow(tmp_path):
    """One conversion (float32 LiteRT); OpenVINO when installed (an optional peer)."""
    from xtremedistil_tf import peers

    config = benchmark.BenchmarkConfig(
        output_dir=str(tmp_path), models=(TINY,), batch_sizes=(2,), seq_lengths=(8,),
        modes=("function", "litert"),
        peers=("openvino",) if peers.openvino_available() else (), repeats=1, warmup=0,
        peak_matmul_size=64, peak_repeats=2)
    benchmark.run(config, log=lambda *_: None)
    rows = {r["mode"]: r for r in _rows(tmp_path)}
    assert set(rows) == {"function", "litert"} | ({"openvino"} if config.peers else set())
    for mode in set(rows) - {"function"}:
        assert float(rows[mode]["agrees_with_tf"]) >= 0.999
        assert float(rows[mode]["tokens_per_s"]) > 0
    assert 0 < float(rows["litert"]["size_mb"]) < float(rows["function"]["size_mb"]) * 2


def test_openvino_is_optional(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmark, "_importable", lambda module: module != "openvino")
    config = benchmark.BenchmarkConfig(output_dir=str(tmp_path), models=(TINY,),
                                       peers=("openvino",))
    assert config.peers == ("openvino",)  # accepted; skipped with a message at run time
    with pytest.raises(ValueError, match="float32"):
        benchmark.BenchmarkConfig(output_dir=str(tmp_path), models=(TINY,), modes=("litert",),
                                  dtypes=("bfloat16",))


def test_fastest_of_interleaves_rounds_and_keeps_each_models_fastest(monkeypatch):
    from xtremedistil_tf import speed

    calls = []
    ms = iter([30.0, 9.0, 20.0, 8.0, 25.0, 12.0, 10.0, 15.0])

    def fake(model, vocab_size, batch_size, seq_length):
        calls.append((model, seq_length))
        return {"ms_per_batch": next(ms), "seq_length": seq_length}

    monkeypatch.setattr(speed, "time_forward", fake)
    best = speed.fastest_of({"t": "T", "s": "S"}, 100, rounds=2, lengths=(128, 32))
    # Round 1 times every model at every length before round 2 times any again.
    assert calls == [("T", 128), ("T", 32), ("S", 128), ("S", 32)] * 2
    assert {k: v["ms_per_batch"] for k, v in best.items()} == {
        ("t", 128): 25.0, ("t", 32): 9.0, ("s", 128): 10.0, ("s", 32): 8.0}
