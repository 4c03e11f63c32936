"""Teacher and student F1 with each tagging head on the same data: one command, one table.

    python scripts/compare_heads.py [--output_dir runs/heads] [-- extra run_distil flags]

Runs `run_distil.py` once per configuration into `<output_dir>/<name>/` (an interrupted or
finished run resumes instead of starting again) and writes `<output_dir>/heads.md`:
    softmax        teacher softmax head,                  student softmax head
    attention_crf  teacher self-attention + CRF head,     student CRF head (teacher transitions)
With no extra flags this is the embedded default (WNUT-2016, all-MiniLM-L6-v2, teacher:0,2,4).
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CONFIGS = {
    "softmax": ["--head=softmax", "--student_head=softmax"],
    "attention_crf": ["--head=attention_crf", "--student_head=crf"],
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="runs/heads")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    rows = []
    for name, flags in CONFIGS.items():
        out = os.path.join(args.output_dir, name)
        cmd = [sys.executable, "run_distil.py", f"--output_dir={out}",
               f"--export_name=heads-{name}", *flags, *extra]
        print("running:", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, cwd=REPO, check=True)
        with open(os.path.join(REPO, out, "metrics.json")) as f:
            doc = json.load(f)
        rows.append((name, doc))
    lines = ["| head (teacher / student) | teacher F1 | student F1 | teacher dev F1 | "
             "student dev F1 | teacher ms | student ms | speed-up | wall s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, doc in rows:
        t, s = doc["teacher"], doc["student"]
        heads = " / ".join(CONFIGS[name][i].split("=")[1] for i in range(2))
        lines.append(f"| {heads} | {t['f1']:.3f} | {s['f1']:.3f} | {t['dev_f1']:.3f} | "
                     f"{s['dev_f1']:.3f} | {t['ms_per_batch']:.1f} | {s['ms_per_batch']:.1f} | "
                     f"{doc['speedup']:.2f}x | {doc['wall_seconds']:.0f} |")
    table = "\n".join(lines) + "\n"
    with open(os.path.join(REPO, args.output_dir, "heads.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    main()
