"""SavedModel vs LiteRT (float32, dynamic-range int8) vs OpenVINO on one random-weight student,
timed in turns in one process (ratios hold on a shared, loaded CPU), plus file sizes, the
embedding table's share of each file, and dynamic input shapes vs a file per fixed shape.

    python scripts/measure_litert.py [--model xtremedistil-l6-h256-v250k] [--repeats 10] \
        [--shapes 32x128,1x32] [--output docs/litert_measured.md]

Every runtime is checked against TensorFlow (`tf.function`) on the timed input before it is
timed: labels equal at >= 99.9 % of positions for float32 runtimes; int8 agreement reported.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import xtremedistil_tf  # noqa: F401,E402  (TF_USE_LEGACY_KERAS before TensorFlow)
from xtremedistil_tf import startup  # noqa: E402

if __name__ == "__main__":  # TensorFlow's start-up lines stay out of the output (-v 1: back)
    startup.quiet_tensorflow(startup.verbosity_from_argv(sys.argv[1:]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from xtremedistil_tf import (  # noqa: E402
    benchmark,
    benchmark_models,
    benchmark_modes,
    litert,
    models,
    peers,
    savedmodel,
)


def cpu_line() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return platform.processor()
    info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = info.get("Flags", "").split()
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return (f"{info.get('Model name', '?').strip()}, {litert.cpu_count()} CPUs, "
            f"{' '.join(simd) or 'no avx2'}")


def time_turns(fns: dict, ids: np.ndarray, mask: np.ndarray, repeats: int, warmup: int) -> dict:
    """{name: [ms per call]}; the runtimes take turns on every repetition."""
    for fn in fns.values():
        for _ in range(warmup):
            fn(ids, mask)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            out = fn(ids, mask)
            [np.asarray(v) for v in out.values()]
            times[name].append((time.perf_counter() - t0) * 1000)
    return times


def embedding_share(path: str, vocab: int) -> tuple[float, str]:
    """(bytes of the `[vocab, H]` word-embedding tensor / file size, its dtype)."""
    interpreter = litert.interpreter_class()(model_path=path)
    for t in interpreter.get_tensor_details():
        if len(t["shape"]) == 2 and int(t["shape"][0]) == vocab:
            size = int(np.prod(t["shape"])) * np.dtype(t["dtype"]).itemsize
            return size / os.path.getsize(path), np.dtype(t["dtype"]).name
    return float("nan"), "?"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="xtremedistil-l6-h256-v250k")
    p.add_argument("--shapes", default="32x128,1x32")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--litert_threads", default="",
                   help="also time LiteRT on these thread counts (e.g. 1), beside every CPU")
    p.add_argument("--skip_fixed", action="store_true",
                   help="skip the dynamic vs fixed input shape comparison")
    p.add_argument("--output", default="")
    startup.add_verbosity_argument(p)
    args = p.parse_args(argv)
    import transformers

    transformers.logging.set_verbosity_error()
    tf.random.set_seed(0)
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    model = benchmark_models.build_model(args.model)
    vocab = int(model.encoder.config.vocab_size)
    threads = litert.cpu_count()
    labels = [f"L{i}" for i in range(model.num_labels)]
    lines = [f"CPU: {cpu_line()}, load average {os.getloadavg()[0]:.1f} at start (shared with "
             "other jobs; ratios from one process, runtimes timed in turns)",
             f"model: {args.model} (random weights), "
             f"{models.count_params(model) / 1e6:.1f}M parameters, vocab {vocab}", ""]
    with tempfile.TemporaryDirectory(prefix="litert-") as work:
        no_tok = benchmark_modes.NoTokenizer()
        saved = savedmodel.export(model, labels, no_tok, work, "m", version=1)
        serving = tf.saved_model.load(saved).signatures["serving_default"]
        fns = {"saved_model": lambda i, m: serving(input_ids=tf.constant(i),
                                                    attention_mask=tf.constant(m))}
        function = tf.function(benchmark_modes.forward_fn(model))
        fns["tf.function"] = lambda i, m: function(tf.constant(i), tf.constant(m))
        sizes = {"saved_model": sum(os.path.getsize(os.path.join(d, f))
                                    for d, _, fs in os.walk(os.path.join(saved, "variables"))
                                    for f in fs)}
        for mode, quantize in peers.LITERT_MODES.items():
            t0 = time.perf_counter()
            path = litert.export(model, labels, no_tok, work, "m", 1, quantize)
            convert_s = time.perf_counter() - t0
            fns[mode] = litert.Model(path, num_threads=threads)
            for n in (int(x) for x in args.litert_threads.split(",") if x.strip()):
                fns[f"{mode} ({n} thread{'s' if n > 1 else ''})"] = litert.Model(path, n)
            sizes[mode] = fns[mode].size_bytes
            share, dtype = embedding_share(fns[mode].path, vocab)
            lines.append(f"{mode}: {sizes[mode] / 1e6:.1f} MB, converted in {convert_s:.0f} s; "
                         f"word embeddings ({vocab} x {model.hidden_size}, {dtype}) are "
                         f"{share:.0%} of the file")
        if peers.openvino_available():
            fns["openvino"] = peers.openvino_callable(saved, threads)[0]
        lines += [f"saved_model variables: {sizes['saved_model'] / 1e6:.1f} MB", ""]
        rng = np.random.default_rng(0)
        header = ("| batch x tokens | runtime | ms p50 | tokens/s | vs SavedModel | "
                  "labels = TF |")
        lines += [header, "|---|---|---|---|---|---|"]
        for batch, length in shapes:
            ids = rng.integers(5, vocab, (batch, length)).astype(np.int32)
            mask = np.ones_like(ids)
            reference = {k: v.numpy() for k, v in function(ids, mask).items()}
            agree = {}
            for name, fn in fns.items():
                out = {k: np.asarray(v) for k, v in fn(ids, mask).items()}
                if name.startswith("litert_int8"):
                    agree[name] = benchmark.agreement(reference, out)[0]
                else:
                    agree[name] = benchmark.check_agreement(reference, out, name)
            times = time_turns(fns, ids, mask, args.repeats, args.warmup)
            base = float(np.median(times["saved_model"]))
            for name, ts in times.items():
                ms = float(np.median(ts))
                lines.append(f"| {batch} x {length} | {name} | {ms:.1f} | "
                             f"{batch * length / ms * 1000:.0f} | {base / ms:.2f}x | "
                             f"{agree[name]:.2%} |")
            print("\n".join(lines[-len(times):]), flush=True)
        lines += ["", "Input shapes: one file with dynamic inputs, resized per call, vs a file "
                  "converted for the one fixed shape (fp32, same process, in turns):", ""]
        for batch, length in [] if args.skip_fixed else shapes:
            fixed = _fixed_shape_file(model, work, batch, length)
            ids = rng.integers(5, vocab, (batch, length)).astype(np.int32)
            mask = np.ones_like(ids)
            other = np.ones((max(1, batch // 2), max(2, length // 2)), np.int32)
            dynamic = fns["litert"]

            def alternating(i, m, dynamic=dynamic, other=other):
                dynamic(other, other)  # another shape first: the next call must resize back
                return dynamic(i, m)

            times = time_turns({"dynamic": dynamic, "fixed": fixed}, ids, mask,
                               args.repeats, args.warmup)
            t_alt = time_turns({"alt": alternating}, ids, mask, args.repeats, 1)["alt"]
            t_other = time_turns({"o": dynamic}, other, other, args.repeats, 1)["o"]
            d, f = (float(np.median(times[k])) for k in ("dynamic", "fixed"))
            alt = float(np.median(t_alt)) - float(np.median(t_other))
            lines.append(f"- {batch} x {length}: dynamic {d:.1f} ms, fixed {f:.1f} ms "
                         f"(fixed/dynamic time {f / d:.2f}); after a call at another shape "
                         f"{alt:.1f} ms")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


def _fixed_shape_file(model, work: str, batch: int, length: int):
    """A float32 `.tflite` converted for exactly `[batch, length]` inputs, as a callable."""
    path = os.path.join(work, f"fixed-{batch}x{length}.tflite")
    with open(path, "wb") as f:
        f.write(litert.convert(model, batch=batch, length=length))
    return litert.Model(path)


if __name__ == "__main__":
    sys.exit(main())
