"""tf.distribute: two replicas (one process, two logical CPUs) and two worker processes on
127.0.0.1 each reproduce a single device's loss trajectory on the same global batches."""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, SMOKE, run_distil

WORKER = os.path.join(REPO, "tests", "distributed_worker.py")


def _run(mode, out, init, *extra, env=None):
    return subprocess.Popen([sys.executable, WORKER, mode, str(out), str(init), *extra],
                            cwd=REPO, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def assert_same_weights(got, expected, atol=1e-6):
    """Every variable, element by element (a replica that missed an update shows here)."""
    assert len(got) == len(expected)
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=atol, err_msg=f"variable {i}")


def _result(proc, out):
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    folder = tmp_path_factory.mktemp("single")
    init = folder / "init.npz"
    return _result(_run("single", folder / "out.json", init), folder / "out.json"), init


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_mirrored_two_cpu_replicas_match_one_device(single, tmp_path):
    reference, init = single
    got = _result(_run("mirrored", tmp_path / "out.json", init), tmp_path / "out.json")
    assert got["replicas"] == 2
    assert got["losses"] == pytest.approx(reference["losses"], rel=1e-5)
    assert_same_weights(got["weights"], reference["weights"])


def test_fused_adamw_on_two_replicas_matches_keras_adamw_on_one_device(single, tmp_path):
    """Every variable through `adamw.AdamW`'s fused update (in a model this small only the
    threshold sends them there), mirrored, against Keras' own AdamW on one device. The two
    round in another order (Keras decays the momentum, then adds the gradient in), which 3
    epochs at learning rate 1e-2 carry to 1e-5 on a few weights; a replica that missed its
    update would be off by the update itself (about 1e-2)."""
    reference, init = single
    got = _result(_run("mirrored", tmp_path / "out.json", init, env={"FUSED_MIN_SIZE": "1"}),
                  tmp_path / "out.json")
    assert got["losses"] == pytest.approx(reference["losses"], rel=1e-5)
    assert_same_weights(got["weights"], reference["weights"], atol=2e-5)


def test_two_workers_match_one_device_and_only_the_chief_keeps_checkpoints(single, tmp_path):
    reference, init = single
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for i in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}
        procs.append(_run("multi_worker", tmp_path / f"out{i}.json", init, str(tmp_path / "ckpt"),
                          env={"TF_CONFIG": json.dumps(tf_config)}))
    results = [_result(p, tmp_path / f"out{i}.json") for i, p in enumerate(procs)]
    for got in results:
        assert got["replicas"] == 2
        assert got["losses"] == pytest.approx(reference["losses"], rel=1e-5)
        assert_same_weights(got["weights"], reference["weights"])
    assert [r["chief"] for r in results] == [True, False]
    assert (tmp_path / "ckpt" / "checkpoint").is_file()  # the chief's
    assert (tmp_path / "ckpt" / ".worker1").is_dir()  # worker 1's scratch, not the real one


def _run_distil(*args):
    """In a fresh process: its CPU is split into logical devices before TensorFlow starts."""
    return run_distil(SMOKE, *args, fresh_process=True)


def test_pipeline_on_two_replicas_matches_one_device(tmp_path):
    """The whole run (teacher outputs, every student stage, model choice) on two replicas, against
    the same run on one device: without dropout (a copy of the tiny teacher whose config has
    none, a student cut from it, no head dropout) the same global batches give the same
    trajectory and weights."""
    from xtremedistil_tf import model_folders

    teacher = tmp_path / "teacher"
    shutil.copytree(os.path.join(REPO, "tests", "fixtures", "models", "tiny_bert"), teacher)
    config = json.loads((teacher / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (teacher / "config.json").write_text(json.dumps(config))
    common = (f"--teacher={teacher}", "--student=teacher:0", "--dropout=0", "--teacher_epochs=0",
              "--stages=representations,labels", "--nogradual_unfreezing")
    proc = _run_distil(*common, f"--output_dir={tmp_path}/run", f"--export_dir={tmp_path}/exports",
                       "--distribution_strategy=mirrored", "--cpu_devices=2",
                       "--per_replica_batch_size=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MirroredStrategy, 2 replicas in sync; global batch 8 (4 per replica)" in proc.stderr
    # The teacher is not fine-tuned (run_stage under a strategy is tested above); its outputs
    # are computed, and every student stage trains, on both replicas.
    for stage in ("[representations]", "[labels]"):
        assert f"{stage} epoch 1/1" in proc.stderr
    assert (tmp_path / "run" / "metrics.json").is_file()
    assert (tmp_path / "exports" / "run" / "1" / "saved_model.pb").is_file()

    one = run_distil(SMOKE, *common, "--batch_size=8", f"--output_dir={tmp_path}/one",
                     "--export_formats=none")
    assert one.returncode == 0, one.stderr[-3000:]
    histories = [json.loads((tmp_path / name / "history.json").read_text())
                 for name in ("run", "one")]
    for two_replicas, one_device in zip(*histories, strict=True):
        assert two_replicas["stage"] == one_device["stage"]
        for key in ("train_loss", "dev_loss", "dev_f1"):
            assert two_replicas.get(key) == pytest.approx(one_device.get(key), rel=1e-5)
    for which in ("teacher", "student"):
        got, expected = (model_folders.load_model(str(tmp_path / name / which), which)[0]
                         for name in ("run", "one"))
        assert_same_weights([v.numpy() for v in got.weights],
                            [v.numpy() for v in expected.weights])


def test_multi_worker_without_tf_config_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)  # checked before any device is touched
    proc = run_distil(SMOKE, f"--output_dir={tmp_path}", "--distribution_strategy=multi_worker")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "needs TF_CONFIG" in proc.stderr.strip().splitlines()[-1]


def test_nan_batch_is_skipped_on_every_replica():
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tests", "distributed_nan.py")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipped on all replicas" in proc.stdout
    assert "batch skipped, learning rate halved (1/2 skips)" in proc.stderr
