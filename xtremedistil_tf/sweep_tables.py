"""The sweep's tables: sweep.md (one row per point) and spread.md (`--spread_over KEY`: one row
per combination of the other grid keys, each metric's mean, standard deviation and range over
KEY's values, e.g. over seeds)."""

from __future__ import annotations

import re
import statistics

from xtremedistil_tf import sweep_grid as grid_lib

METRICS = ("teacher_f1", "student_f1", "teacher_dev_f1", "student_dev_f1", "student_params",
           "student_size_mb", "speedup", "wall_s")
LANG_PREFIX = "student_f1_"  # + a language: the student's test F1 on that language's sentences
SPREAD_METRICS = ("teacher_f1", "student_f1", "teacher_dev_f1", "student_dev_f1", "wall_s")


def number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def sort_rows(rows: list[dict], key: str, ascending: bool = False) -> list[dict]:
    """Rows sorted by a numeric column (descending unless `ascending`); failed rows and rows
    without a number last, ties in grid order."""
    def rank(row):
        value = number(row.get(key))
        missing = row["status"] != "done" or value is None
        return (missing, 0.0 if missing else (value if ascending else -value))

    return sorted(rows, key=rank)


def _display(value: str) -> str:
    """A grid value as a table cell: short (see `sweep_grid.short_value`), `|` escaped."""
    cell = grid_lib.short_value(value)
    limit = grid_lib.MAX_VALUE_CHARS
    cell = cell if len(cell) <= limit else cell[:limit - 1] + "…"
    return cell.replace("|", "\\|")


def _params(n) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))


def _wall(seconds) -> str:
    return f"{seconds:.0f} s" if seconds < 100 else f"{seconds / 60:.1f} min"


def language_columns(rows: list[dict]) -> list[str]:
    """The per-language student F1 columns (`student_f1_<lang>`) present in any row."""
    return sorted({k for r in rows for k in r if k.startswith(LANG_PREFIX)})


def markdown(rows: list[dict], keys: list[str], sort_by: str, ascending: bool) -> str:
    """The sweep as a markdown table (F1 to 3 decimals, params like 17.3M, speed-up like 2.02x)."""
    f1 = "{:.3f}"
    langs = language_columns(rows)
    formats = [("teacher F1", "teacher_f1", f1), ("student F1", "student_f1", f1),
               ("teacher dev F1", "teacher_dev_f1", f1), ("student dev F1", "student_dev_f1", f1),
               *[(f"student F1 {c[len(LANG_PREFIX):]}", c, f1) for c in langs if len(langs) > 1],
               ("student params", "student_params", _params), ("MB", "student_size_mb", "{:.1f}"),
               ("speed-up", "speedup", "{:.2f}x"), ("wall", "wall_s", _wall)]
    head = [*keys, *(h for h, _, _ in formats), "status"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] * len(keys) + ["---:"] * len(formats) + ["---"]) + "|"]
    for r in sort_rows(rows, sort_by, ascending):
        cells = [_display(str(r.get(k, ""))) for k in keys]
        for _, column, fmt in formats:
            value = number(r.get(column))
            done = r["status"] == "done" or column == "wall_s"
            if value is None or not done:
                cells.append("—")
            else:
                cells.append(fmt(value) if callable(fmt) else fmt.format(value))
        error = re.sub(r"^error:\s*", "", r.get("error") or "")
        error = error if len(error) <= 100 else error[:99] + "…"
        status = f"{r['status']}: {error}" if error else r["status"]
        cells.append(status.replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    done = sum(r["status"] == "done" for r in rows)
    order = "ascending" if ascending else "descending"
    note = (f"\n{done} of {len(rows)} points done; sorted by {sort_by} ({order}). F1: entity F1 "
            "on test (dev F1 on dev); speed-up: the student's time per batch vs the teacher's; "
            "wall: the whole run (or, when failed, until it failed).\n")
    return "\n".join(lines) + "\n" + note


def spread_rows(rows: list[dict], keys: list[str], over: str) -> list[dict]:
    """Groups the done points by the grid keys other than `over` (in grid order) and gives, per
    group, `runs` (its done points) and for each of SPREAD_METRICS `<metric>_mean`, `_std`
    (sample standard deviation, n - 1; 0 for one run), `_min` and `_max`."""
    rest = [k for k in keys if k != over]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        members = groups.setdefault(tuple(r.get(k, "") for k in rest), [])
        if r["status"] == "done":
            members.append(r)
    out = []
    for values, members in groups.items():
        row = {**dict(zip(rest, values)), "runs": len(members)}
        for metric in SPREAD_METRICS:
            xs = [x for x in (number(m.get(metric)) for m in members) if x is not None]
            if xs:
                row.update({f"{metric}_mean": statistics.fmean(xs),
                            f"{metric}_std": statistics.stdev(xs) if len(xs) > 1 else 0.0,
                            f"{metric}_min": min(xs), f"{metric}_max": max(xs)})
        out.append(row)
    return out


def spread_columns(keys: list[str], over: str) -> list[str]:
    """spread.csv's columns."""
    return [*(k for k in keys if k != over), "runs",
            *(f"{m}_{s}" for m in SPREAD_METRICS for s in ("mean", "std", "min", "max"))]


def spread_markdown(spread: list[dict], keys: list[str], over: str) -> str:
    """spread.md: F1 as `mean ± std (min–max)` over `over`'s values, wall as the mean."""
    rest = [k for k in keys if k != over]
    names = {"teacher_f1": "teacher F1", "student_f1": "student F1",
             "teacher_dev_f1": "teacher dev F1", "student_dev_f1": "student dev F1",
             "wall_s": "wall (mean)"}
    lines = ["| " + " | ".join([*rest, "runs", *names.values()]) + " |",
             "|" + "|".join(["---"] * len(rest) + ["---:"] * (1 + len(names))) + "|"]
    for r in spread:
        cells = [_display(str(r.get(k, ""))) for k in rest] + [str(r["runs"])]
        for metric in names:
            if f"{metric}_mean" not in r:
                cells.append("—")
            elif metric == "wall_s":
                cells.append(_wall(r["wall_s_mean"]))
            else:
                cells.append(f"{r[f'{metric}_mean']:.3f} ± {r[f'{metric}_std']:.3f} "
                             f"({r[f'{metric}_min']:.3f}–{r[f'{metric}_max']:.3f})")
        lines.append("| " + " | ".join(cells) + " |")
    return ("\n".join(lines) + f"\n\nOver the values of {over}: mean ± sample standard deviation "
            "(min–max) of the points that finished; F1 on test, dev F1 on dev.\n")
