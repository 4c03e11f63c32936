"""Reproduces the zero-shot table: an English teacher, four distillers, per-target-language F1.

    python scripts/reproduce_zero_shot.py --data ../shared/data/wikiann \
        --teacher /path/to/multilingual-e5-small --output_dir runs/zero_shot \
        --results results/zero_shot --readme docs/zero-shot.md

Rows, as in the cross-lingual NER papers: direct transfer (the teacher fine-tuned on the source
language, applied to the targets as is), then TSL, MSD, MTMT and the XtremeDistil stages for
each student, all with the same teacher: the first row to run fine-tunes it (with per-layer
classifiers, which MSD needs and the others ignore), the others reuse it, and so do later runs
of the table in the same OUTPUT_DIR; the teacher's outputs on the target text are cached once
under OUTPUT_DIR/teacher_cache for every row with that text. Source labels train;
target sentences are used without labels; model choice on source dev only; every target language
is scored on its test sample. Resumable like reproduce_wikiann.py: rerun the same command to
continue.

Students: `--student SPEC` (one; default 6 of the teacher's 12 layers), or `--students
'NAME=SPEC;NAME=SPEC'` for several, e.g. the papers' setting and the compressed ones:

    --students 'teacher-size=teacher:0,1,2,3,4,5,6,7,8,9,10,11;half-depth=teacher:0,2,4,6,8,10;\
l6-h256=l6-h256'

Runs with several students are named `<distiller> <NAME>` (`runs/TSL_teacher-size/`); `teacher:`
students start from the fine-tuned teacher's layers and classifier (so `teacher:0,...,11` is the
teacher itself), presets like `l6-h256` from a weight selection of it (`--student_init=select`,
added for both), a folder or hub id from that checkpoint (the teacher's own pretrained encoder,
as in the TSL paper's code, is `NAME=<--teacher>`).

The curve of target F1 against target sentences: `--curve_row 'MTMT teacher-size' --curve
1000,5000,0` re-runs that row with each amount of unlabelled text per target (0: the whole
train split; the table's own `--target_text` is that row itself), with the same teacher, source
data and test samples, into `runs/<row>_@<n>/`; `RESULTS/curve.csv` and `curve.png` hold it.

Seeds: `--seeds 43,44` runs every chosen row again with each student seed (run_distil.py
`--seed`; the teacher, samples and test sets stay those of `--seed`) into `runs/<row>_seed<N>/`;
the table then gives each row's mean over its finished seeds and the target average's range.

Records: every finished run leaves RESULTS/records/<run>.json (its F1s, size, speed-up and wall,
its teacher's F1s, and the flags it ran with after `--`, which the table shows by the model's
name), committed with the table, which is built from them: the table outlives the run folders
(a lost machine, a cleaned disk). A record names its teacher by a fingerprint of the
teacher's test F1s, so rows whose teacher was fine-tuned again (on another machine: another
floating-point order, another teacher) come after that teacher's own direct transfer, with a
teacher column (letters A, B, ... kept in RESULTS/teachers.json once given); "vs direct" is each
row's target average minus its own teacher's. To add a row that an earlier teacher already has
with another teacher, run it into another --output_dir with the same --results: its record goes
beside the other, RESULTS/records/<run>@<teacher>.json.
"""

from __future__ import annotations

import argparse
import csv
import glob
import hashlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reproduce_wikiann as rw  # noqa: E402

from xtremedistil_tf import config  # noqa: E402

BEGIN, END = "<!-- zero-shot:begin -->", "<!-- zero-shot:end -->"  # --section's default
RUNS = [  # (row, strategy flagfile or None, extra flags)
    ("TSL", "tsl.cfg", []),
    ("MSD", "msd.cfg", []),
    ("MTMT", "mtmt.cfg", []),
    ("XtremeDistil", None, []),
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="folder with <lang>/{train,dev,test}.conll")
    p.add_argument("--teacher", required=True)
    p.add_argument("--teacher_checkpoint", default="",
                   help="teacher/ folder of an earlier run (same teacher, source data and labels)"
                        ": every row reuses it, none fine-tunes one")
    p.add_argument("--student", default="teacher:0,2,4,6,8,10")
    p.add_argument("--students", default="",
                   help="several students, 'NAME=SPEC;NAME=SPEC' (replaces --student)")
    p.add_argument("--output_dir", default="runs/zero_shot")
    p.add_argument("--results", default="results/zero_shot")
    p.add_argument("--readme", default="")
    p.add_argument("--section", default="zero-shot",
                   help="--readme's table goes between <!-- SECTION:begin --> and "
                        "<!-- SECTION:end --> (one section per table, e.g. per --target_text)")
    p.add_argument("--source", default="en")
    p.add_argument("--targets", default="de,es,nl,ar,fi,hu")
    p.add_argument("--source_train", type=int, default=5000, help="labelled source sentences")
    p.add_argument("--source_dev", type=int, default=1000)
    p.add_argument("--target_text", type=int, default=1000,
                   help="unlabelled sentences per target (from its train split, tags dropped)")
    p.add_argument("--test_per_lang", type=int, default=1000)
    p.add_argument("--curve", default="",
                   help="target sentences per language for the curve, e.g. 1000,5000,0 (0: all)")
    p.add_argument("--curve_row", default="", help="the row the curve re-runs, e.g. 'MTMT'")
    p.add_argument("--seeds", default="",
                   help="more student seeds, e.g. 43,44: every chosen row also runs with each "
                        "(run_distil.py --seed; the same teacher, samples and test sets) into "
                        "runs/<row>_seed<N>/, and the table gives the mean and range over seeds")
    rw.add_run_arguments(p)
    args = p.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    try:
        students = parse_students(args.students) or [("", args.student)]
    except ValueError as e:
        p.error(f"--students: {e}")
    try:
        args.seed_list = parse_seeds(args.seeds, args.seed)
    except ValueError as e:
        p.error(str(e))
    try:
        sizes = curve_sizes(args.curve, args.target_text)
    except ValueError as e:
        p.error(str(e))
    rows = table_rows(students)
    by_name = {r[0]: r for r in rows}
    if sizes and args.curve_row not in by_name:
        p.error(f"--curve_row={args.curve_row!r}: name one of the rows: {', '.join(by_name)}")
    runs = rw.select_rows(p, args, rows, keep_first=False)
    if not args.summary_only:
        # Rows with the same teacher and target text run the teacher on it once: the cache's
        # key (teacher weights, text) tells the others apart, and MSD's (with the per-layer
        # classifiers' outputs) serves TSL and MTMT too.
        common = [f"--source_lang={args.source}", f"--target_langs={','.join(targets)}",
                  "--aux_heads",
                  f"--teacher_cache_dir={os.path.join(args.output_dir, 'teacher_cache')}"]
        todo = [(seed_name(name, seed), strategy, extra + seed_flags(seed), args.target_text)
                for name, strategy, extra in runs for seed in [None, *args.seed_list]]
        todo += [(curve_name(args.curve_row, n), *by_name[args.curve_row][1:], n) for n in sizes]
        reuse = ([f"--teacher_checkpoint={args.teacher_checkpoint}"]
                 if args.teacher_checkpoint else [])
        trainer = teacher_on_disk(args, run_names(args, rows, sizes)) or (
            todo[0][0] if todo else "")
        for name, flagfile, extra, n in todo:
            strategy = ([f"--flagfile={os.path.join(rw.REPO, 'flags', flagfile)}"]
                        if flagfile else [])
            if not rw.run_row(name, common + strategy + extra + reuse,
                              data_files(args, targets, n), args,
                              first=name if reuse else trainer):
                return 1
    records = save_records(args, run_names(args, rows, sizes))
    rows = summarise(args, targets, students, records)
    if not rows:
        print("no finished runs yet", file=sys.stderr)
        return 1
    write(rows, targets, args)
    if sizes:
        write_curve(args, targets, sizes, rows, records)
    return 0


def run_names(args, rows: list, sizes: list[int]) -> list[str]:
    """Every run of the table: each row with each seed, then the curve row's other sizes."""
    return ([seed_name(r[0], seed) for r in rows for seed in [None, *args.seed_list]]
            + [curve_name(args.curve_row, n) for n in sizes])


def teacher_on_disk(args, names: list[str]) -> str:
    """The first of the table's runs `names` whose folder holds a teacher it fine-tuned ("" if
    none): the later rows reuse it, as on the machine that ran the earlier ones. Without one
    (a fresh machine: the earlier rows are only records), the first row to run fine-tunes it."""
    return next((n for n in names if rw._teacher_seconds(rw.run_dir(args, n))), "")


def data_files(args, targets: list[str], target_text: int) -> dict[str, str]:
    """The run_distil.py file flags: the source's labelled sample, `target_text` unlabelled
    sentences per target (a sample of its own under data_curve/<n>/ unless it is the table's
    `--target_text`), the source dev sample and every language's test sample."""
    dst = os.path.join(args.output_dir, "data")

    def sample(lang, split, n, folder=dst):
        return rw.sample_split(args.data, folder, lang, split, n, args.seed)

    text = (dst if target_text == args.target_text
            else os.path.join(args.output_dir, "data_curve", str(target_text)))
    return {
        "train": ",".join([sample(args.source, "train", args.source_train)]
                          + [sample(t, "train", target_text, text) for t in targets]),
        "dev": sample(args.source, "dev", args.source_dev),
        "test": ",".join(sample(lang, "test", args.test_per_lang)
                         for lang in [args.source, *targets]),
    }


def curve_sizes(text: str, target_text: int) -> list[int]:
    """'1000,5000,0' -> the sizes that need runs of their own (not the table's `target_text`)."""
    sizes = _ints(text, f"--curve={text}: write sentence counts, e.g. 1000,5000,0")
    if any(n < 0 for n in sizes) or len(set(sizes)) != len(sizes):
        raise ValueError(f"--curve={text}: counts must be distinct and >= 0 (0: all)")
    return [n for n in sizes if n != target_text]


def curve_name(row: str, target_text: int) -> str:
    return f"{row} @{target_text or 'all'}"


def parse_seeds(text: str, seed: int) -> list[int]:
    """'43,44' -> [43, 44]: the student seeds each row runs with besides `--seed`."""
    seeds = _ints(text, f"--seeds={text}: write integers, e.g. 43,44")
    if len(set(seeds)) != len(seeds) or seed in seeds:
        raise ValueError(f"--seeds={text}: seeds must be distinct and differ from --seed={seed}")
    return seeds


def _ints(text: str, error: str) -> list[int]:
    """'1, 2,' -> [1, 2]; `error` is the ValueError's message for a part that is not one."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(error) from None


def seed_name(row: str, seed: int | None) -> str:
    """The run of `row` with student seed `seed` (None: the row's own run, with --seed)."""
    return row if seed is None else f"{row} seed{seed}"


def seed_flags(seed: int | None) -> list[str]:
    """run_distil.py flags of that run: its --seed after the common one (the last one wins)."""
    return [] if seed is None else [f"--seed={seed}"]


def table_rows(students: list[tuple[str, str]]) -> list[tuple[str, str | None, list[str]]]:
    """(row name, strategy flagfile, flags) for every distiller of every (NAME, SPEC) student;
    a preset student (`l6-h256`) is cut from the fine-tuned teacher by weight selection, and a
    `teacher:i,j` one keeps the teacher's classifier (`--student_init=select`: on en dev, TSL's
    teacher-size student reached 0.781 so, 0.771 with a new classifier)."""
    def student_flags(spec):
        cut = config.PRESET.match(spec) or config.CUT.match(spec)
        return [f"--student={spec}"] + (["--student_init=select"] if cut else [])

    return [(row_name(name, label), strategy, extra + student_flags(spec))
            for label, spec in students for name, strategy, extra in RUNS]


def parse_students(text: str) -> list[tuple[str, str]]:
    """'NAME=SPEC;NAME=SPEC' -> [(NAME, SPEC)] ([] for an empty text)."""
    students = []
    for part in (x.strip() for x in text.split(";")):
        if not part:
            continue
        name, eq, spec = part.partition("=")
        if not eq or not name.strip() or not spec.strip() or " " in name.strip():
            raise ValueError(f"'{part}': write NAME=SPEC, e.g. half-depth=teacher:0,2,4,6,8,10")
        students.append((name.strip(), spec.strip()))
    if len({n for n, _ in students}) != len(students):
        raise ValueError("a NAME repeats")
    return students


def row_name(distiller: str, student: str) -> str:
    """A row's (and its run folder's) name: the distiller, then the student's NAME if any."""
    return f"{distiller} {student}" if student else distiller


def summarise(args, targets: list[str], students: list[tuple[str, str]],
              records: dict[str, dict]) -> list[dict]:
    """The table's rows, from the run records (`save_records`): per teacher, its direct transfer
    and then every distiller row of each (NAME, SPEC) student (NAME "" for the one `--student`)
    that has a record of its own run with that teacher. A row's F1s and wall are the means over
    its seed records (`--seeds`) of the same teacher and flags after `--` (`flags`, "" for
    none), `avg_f1_min`/`max` their range; `gain` is its target average minus its teacher's
    direct transfer."""
    letter = teacher_letters(args.results, records)
    teachers = sorted(letter, key=letter.get)
    langs = [args.source, *targets]
    rows = []
    for teacher in teachers:
        mine = {r["run"]: r for r in records.values() if r["teacher"]["id"] == teacher}
        first = next(iter(mine.values()))["teacher"]
        direct = _row("direct transfer (teacher)", "", [first], targets, langs,
                      max(r["teacher"]["wall_s"] for r in mine.values()))
        group = [dict(direct, teacher=letter[teacher], teacher_id=teacher, gain=0.0, flags="")]
        for label, spec in students:
            for distiller, _, _ in RUNS:
                name = row_name(distiller, label)
                if name not in mine:  # no row without its own run
                    continue
                flags = mine[name]["flags"]  # its seed runs: the same recipe only
                runs = [r for r in (mine.get(seed_name(name, s)) for s in [None, *args.seed_list])
                        if r is not None and r["flags"] == flags]
                row = _row(distiller, spec, runs, targets, langs,
                           sum(r["wall_s"] for r in runs) / len(runs))
                group.append(dict(row, teacher=letter[teacher], teacher_id=teacher,
                                  speedup=runs[0]["speedup"], flags=" ".join(flags),
                                  gain=row["avg_f1"] - direct["avg_f1"]))
        if len(group) > 1:
            rows += group
    return rows


def teacher_letters(results: str, records: dict[str, dict]) -> dict[str, str]:
    """Each teacher of `records` (by fingerprint) -> its letter, A, B, ...: kept in
    RESULTS/teachers.json once given, so that a row re-run later (a newer record) never renames
    the teachers the prose speaks of; a new teacher gets the next letter, the one of its earliest
    record first."""
    path = os.path.join(results, "teachers.json")
    try:
        with open(path, encoding="utf-8") as f:
            letter = json.load(f)
    except OSError:
        letter = {}
    ids = {r["teacher"]["id"] for r in records.values()}
    new = sorted(ids - set(letter), key=lambda t: (min(r["finished"] for r in records.values()
                                                       if r["teacher"]["id"] == t), t))
    for t in new:
        letter[t] = chr(ord("A") + len(letter))
    if new:
        os.makedirs(results, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(letter, f, indent=1, sort_keys=True)
            f.write("\n")
    return {t: c for t, c in letter.items() if t in ids}


def _row(model: str, student: str, runs: list[dict], targets: list[str], langs: list[str],
         wall_s: float) -> dict:
    """One table row: the mean F1s of `runs` (model entries with per_language F1)."""
    f1s = [{lang: e["per_language"][lang]["f1"] for lang in langs} for e in runs]
    avgs = [sum(f1[t] for t in targets) / len(targets) for f1 in f1s]
    return {"model": model, "student": student,
            "test_sentences": {t: runs[0]["per_language"][t].get("sentences") for t in targets},
            "avg_f1": sum(avgs) / len(avgs),
            **{f"f1_{lang}": sum(f1[lang] for f1 in f1s) / len(f1s) for lang in langs},
            "params": runs[0]["params"], "speedup": 1.0, "seeds": len(runs),
            "avg_f1_min": min(avgs), "avg_f1_max": max(avgs), "wall_s": wall_s}


def save_records(args, names: list[str]) -> dict[str, dict]:
    """RESULTS/records/<run>.json for every run in `names` whose metrics.json is on disk (written
    again each time), then every record of `names` there: what the table needs of a run, kept
    with the results so that the table outlives the run folders (a lost machine, a cleaned
    disk). A record names its teacher by a fingerprint of the teacher's test F1s: rows of
    teachers fine-tuned apart (another machine) are never averaged together, and a run whose
    name already has another teacher's record keeps its own beside it, `<run>@<teacher>.json`
    (keyed `<run>@<teacher>` in the result; its `run` field is the name)."""
    folder = os.path.join(args.results, "records")
    records = {}
    for name in names:
        primary = os.path.join(folder, name.replace(" ", "_") + ".json")
        metrics = os.path.join(rw.run_dir(args, name), "metrics.json")
        if os.path.exists(metrics):
            with open(metrics, encoding="utf-8") as f:
                doc = json.load(f)
            teacher = doc["teacher"]
            record = {
                "run": name,
                "finished": time.strftime("%Y-%m-%d %H:%M", time.gmtime(
                    os.path.getmtime(metrics))),
                "teacher": {"id": teacher_fingerprint(teacher), "params": teacher["params"],
                            "per_language": teacher["per_language"],
                            "wall_s": rw._teacher_seconds(teacher_run(args, name))},
                "per_language": doc["student"]["per_language"],
                "params": doc["student"]["params"], "speedup": doc["speedup"],
                "wall_s": doc["wall_seconds"], "flags": rw.extra_flags(rw.run_dir(args, name))}
            os.makedirs(folder, exist_ok=True)
            with open(record_path(primary, record["teacher"]["id"]), "w",
                      encoding="utf-8") as f:
                json.dump(record, f, indent=1, sort_keys=True)
                f.write("\n")
        for path in [primary, *sorted(glob.glob(glob.escape(primary[:-5]) + "@*.json"))]:
            if os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    record = json.load(f)
                record.setdefault("flags", [])  # a record from before runs kept them: none
                records[name if path == primary else f"{name}@{record['teacher']['id']}"] = record
    return records


def record_path(primary: str, teacher_id: str) -> str:
    """Where a run's record with teacher `teacher_id` goes: its `primary` `<run>.json`, unless
    that holds another teacher's run of the same name (a row re-run with a teacher fine-tuned
    elsewhere, in another output folder): then `<run>@<teacher_id>.json`."""
    if os.path.exists(primary):
        with open(primary, encoding="utf-8") as f:
            if json.load(f)["teacher"]["id"] != teacher_id:
                return f"{primary[:-5]}@{teacher_id}.json"
    return primary


def teacher_run(args, name: str) -> str:
    """The folder of the run that fine-tuned run `name`'s teacher: the teacher checkpoint the run
    itself was given (its state.json settings; a summary run may pass another or none), else
    this command's `--teacher_checkpoint`, else the run itself."""
    try:
        with open(os.path.join(rw.run_dir(args, name), "state.json"), encoding="utf-8") as f:
            checkpoint = json.load(f)["settings"]["teacher"]["checkpoint"]
    except (OSError, KeyError, TypeError):
        checkpoint = args.teacher_checkpoint
    return (os.path.dirname(checkpoint.rstrip("/")) if checkpoint
            else rw.run_dir(args, name))


def teacher_fingerprint(teacher: dict) -> str:
    """8 hex digits naming a fine-tuned teacher by its per-language test F1s: runs that reuse
    one teacher share them exactly, and two fine-tunings (another machine's floating-point
    order, another seed) do not."""
    scores = {lang: round(e["f1"], 4) for lang, e in sorted(teacher["per_language"].items())}
    return hashlib.sha256(json.dumps(scores).encode()).hexdigest()[:8]


def write_csv(path: str, columns: list[str], rows: list[dict]) -> None:
    """`rows`' `columns` as CSV, floats with 4 decimals."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{row[k]:.4f}" if isinstance(row[k], float) else row[k])
                             for k in columns})


def write(rows: list[dict], targets: list[str], args) -> None:
    os.makedirs(args.results, exist_ok=True)
    seeded = any(r["seeds"] > 1 for r in rows)
    flagged = any(r["flags"] for r in rows)
    columns = ["model", *(["flags"] if flagged else []), "student", "teacher_id",
               *[f"f1_{t}" for t in targets], "avg_f1", "gain",
               *(["seeds", "avg_f1_min", "avg_f1_max"] if seeded else []),
               f"f1_{args.source}", "params", "speedup", "wall_s"]
    write_csv(os.path.join(args.results, "summary.csv"), columns, rows)
    several = len({r["student"] for r in rows if r["student"]}) > 1
    teachers = len({r["teacher"] for r in rows}) > 1
    head = ["model", *(["student"] if several else []), *(["teacher"] if teachers else []),
            *targets, "target avg", "vs direct", f"{args.source} (source)", "params", "wall"]
    left = 1 + several + teachers
    lines = ["| " + " | ".join(head) + " |",
             "|---" * left + "|---:" * (len(head) - left) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(
            [r["model"] + (f" (`{r['flags']}`)" if r["flags"] else ""),
             *([f"`{r['student']}`" if r["student"] else "—"] if several else []),
             *([r["teacher"]] if teachers else []),
             *[f"{100 * r[f'f1_{t}']:.1f}" for t in targets],
             f"**{100 * r['avg_f1']:.1f}**" + (
                 f" ({100 * r['avg_f1_min']:.1f}–{100 * r['avg_f1_max']:.1f}, {r['seeds']} seeds)"
                 if r["seeds"] > 1 else ""),
             f"{100 * r['gain']:+.1f}" if r["student"] else "—",
             f"{100 * r[f'f1_{args.source}']:.1f}",
             f"{r['params'] / 1e6:.1f}M",
             f"{r['wall_s'] / 60:.0f} min" if r["wall_s"] else "—"]) + " |")
    fewer = [f"{t} {n}" for t, n in rows[0]["test_sentences"].items()
             if args.test_per_lang and n and n < args.test_per_lang]
    spec = rows[-1]["student"] or args.student
    table = "\n".join(lines) + (
        f"\n\nEntity F1 on {args.test_per_lang or 'all'} test sentences per language"
        + (f" ({', '.join(fewer)}: their whole test split)" if fewer else "") + ". Teacher "
        f"fine-tuned on {args.source_train or 'all'} {args.source} sentences (model choice on "
        f"{args.source_dev or 'all'} {args.source} dev sentences only); students distil on "
        + (f"{args.target_text} unlabelled sentences per target language; " if args.target_text
           else "each target language's whole train split, tags dropped; ")
        + ("students as in the student column" if several else
           f"student `{spec}` in every row")
        + (f". Teachers {', '.join(sorted({r['teacher'] for r in rows}))}: the same teacher "
           "recipe fine-tuned in separate runs (another machine's floating-point order gives "
           "another teacher); each row follows its own teacher's direct transfer, and "
           "\"vs direct\" is against that one" if teachers else "")
        + (f". Rows with seeds: means over runs with student seeds "
           f"{', '.join(map(str, [args.seed, *args.seed_list]))} (run_distil.py --seed; the same "
           "teacher, samples and test sets), the target average's range in brackets"
           if seeded else "")
        + (". A model with flags in brackets ran with them added to its run_distil.py command "
           "(after `--` on this script's command line)" if flagged else "")
        + ". Wall time: each student's whole run (stages, scoring, export, and the teacher's "
        "outputs on the target text unless an earlier row had cached them) on a CPU shared "
        "with other jobs; "
        + ("direct transfer's is its teacher's fine-tuning (the row that fine-tuned it "
           "includes it).\n" if teachers else
           "direct transfer's is the teacher's fine-tuning, "
           + ("by the earlier run whose teacher every row reuses (no row includes it).\n"
              if args.teacher_checkpoint else "which the first student row's includes.\n")
           if rows[0]["wall_s"] else
           "the teacher was fine-tuned by an earlier run (its time is not in the table).\n"))
    with open(os.path.join(args.results, "summary.md"), "w", encoding="utf-8") as f:
        f.write(table)
    if args.readme:
        rw.update_readme(args.readme, table, f"<!-- {args.section}:begin -->",
                         f"<!-- {args.section}:end -->")
    print(table)


def write_curve(args, targets: list[str], sizes: list[int], rows: list[dict],
                records: dict[str, dict]) -> None:
    """RESULTS/curve.csv and curve.png: the curve row's target F1 at each amount of target text
    it has a record of (its table run included) with the table run's teacher and flags after
    `--`, and that teacher's direct transfer as the line to beat."""
    own = records.get(args.curve_row)
    if own is None:
        return
    direct = next(r for r in rows if r["teacher_id"] == own["teacher"]["id"])
    points = []
    for n in sorted({*sizes, args.target_text}, key=lambda n: n or float("inf")):
        doc = records.get(args.curve_row if n == args.target_text
                          else curve_name(args.curve_row, n))
        if (doc is None or doc["teacher"]["id"] != own["teacher"]["id"]
                or doc["flags"] != own["flags"]):  # another teacher or recipe
            continue
        f1 = {t: doc["per_language"][t]["f1"] for t in targets}
        points.append({"target_text": n, "sentences": _target_sentences(args, targets, n),
                       "avg_f1": sum(f1.values()) / len(targets),
                       **{f"f1_{t}": v for t, v in f1.items()}, "wall_s": doc["wall_s"]})
    if not points:
        return
    columns = ["target_text", "sentences", "avg_f1", *[f"f1_{t}" for t in targets], "wall_s"]
    write_csv(os.path.join(args.results, "curve.csv"), columns, points)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p["sentences"] for p in points], [100 * p["avg_f1"] for p in points], "o-",
            label=" ".join([args.curve_row, *own["flags"]]))
    ax.axhline(100 * direct["avg_f1"], color="k", ls="--", label="direct transfer (teacher)")
    ax.set_xscale("log")
    ax.set_xlabel("unlabelled target sentences per language")
    ax.set_ylabel(f"target average F1 ({', '.join(targets)})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(args.results, "curve.png"), dpi=120)
    plt.close(fig)


def _target_sentences(args, targets: list[str], target_text: int) -> float:
    """Unlabelled sentences per target the runs with `target_text` read (the mean over targets
    of their sample files: a split smaller than `target_text` gives all it has)."""
    files = data_files(args, targets, target_text)["train"].split(",")[1:]
    return sum(len(rw.data_lib.read_conll(f.split("=", 1)[1])) for f in files) / len(files)


if __name__ == "__main__":
    sys.exit(main())
