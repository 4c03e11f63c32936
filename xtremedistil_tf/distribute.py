"""tf.distribute for training: one GPU or CPU (default), several local devices (mirrored),
several hosts (multi_worker, configured by TF_CONFIG) or a TPU.

`train.run_stage` runs under any of these: the global batch is split row-wise over replicas,
each replica's mean loss is weighted by its share of the counted positions (so the gradient is
the one of a single device on the whole batch), and only the chief keeps checkpoints. Models
must be built inside `strategy.scope()` (the pipeline does that).
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

KINDS = ("default", "mirrored", "multi_worker", "tpu")


def split_cpu(devices: int) -> None:
    """Splits the CPU into `devices` logical devices (to run multi-replica code on a CPU).

    Must run before TensorFlow initialises its devices (before any op).
    """
    if devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * devices)


def make_strategy(kind: str, tpu: str = "", cpu_devices: int = 0):
    """The strategy for `kind` (None for "default": plain single-device code paths).

    Args:
        kind: one of `KINDS`.
        tpu: TPU name or grpc:// address for "tpu" ("" = the local TPU VM).
        cpu_devices: with "mirrored" and no GPU, split the CPU into this many logical devices.

    Raises:
        ValueError: a setting that cannot work here, with what to do instead.
    """
    if kind not in KINDS:
        raise ValueError(f"--distribution_strategy={kind}; use one of {', '.join(KINDS)}")
    if kind == "default":
        return None
    if kind == "mirrored":
        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            split_cpu(cpu_devices)
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
            return tf.distribute.MirroredStrategy(devices)
        return tf.distribute.MirroredStrategy()
    if kind == "multi_worker":
        try:
            spec = json.loads(os.environ.get("TF_CONFIG", ""))
            spec["cluster"], spec["task"]
        except (ValueError, KeyError, TypeError):
            raise ValueError(
                "--distribution_strategy=multi_worker needs TF_CONFIG, e.g. "
                '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                '"task": {"type": "worker", "index": 0}} on every worker') from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError) as e:
        raise ValueError(f"--distribution_strategy=tpu: no TPU at {tpu or 'this host'} "
                         f"({str(e).splitlines()[0]}); give --tpu=NAME or grpc://ADDRESS") from None
    return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy: tf.distribute.Strategy | None) -> bool:
    """True unless this process is a non-chief worker of a multi-worker strategy."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task = resolver.task_type
    return task in (None, "chief") or (task == "worker" and resolver.task_id == 0
                                       and "chief" not in resolver.cluster_spec().as_dict())


def worker_folder(strategy: tf.distribute.Strategy | None, folder: str | None) -> str | None:
    """`folder` for the chief; a per-worker scratch folder inside it for other workers (they
    must save too, since saving takes part in collective ops, but their files are not kept)."""
    if folder is None or is_chief(strategy):
        return folder
    return os.path.join(folder, f".worker{strategy.cluster_resolver.task_id}")


def split_batch(strategy: tf.distribute.Strategy, batch: dict):
    """A global numpy batch as per-replica values: replica r of R gets rows r·B/R .. (r+1)·B/R.

    Every worker holds the same batches (same seed), so each takes its replicas' rows by their
    global replica id; a short last batch gives some replicas fewer (or no) rows, which the
    count-weighted loss accounts for.
    """
    n = next(iter(batch.values())).shape[0]
    replicas = strategy.num_replicas_in_sync

    def rows(ctx):
        r = ctx.replica_id_in_sync_group
        lo, hi = n * r // replicas, n * (r + 1) // replicas
        return {k: tf.constant(v[lo:hi]) for k, v in batch.items()}

    return strategy.experimental_distribute_values_from_function(rows)


def replicas(strategy) -> int:
    return strategy.num_replicas_in_sync if strategy else 1


def describe(strategy) -> str:
    if strategy is None:
        return "one device"
    return (f"{type(strategy).__name__}, {strategy.num_replicas_in_sync} replicas in sync")
