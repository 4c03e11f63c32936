"""The grid of a sweep: `--grid` parsed into points, each point's folder name and flags.

The syntax is in `xtremedistil_tf.sweep`'s docstring: `key=v1,v2;key2=w1|w2`, keys are
run_distil.py flag names (booleans take true/false) or `env.NAME`, an environment variable of the
point's process.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import os
import re

# Set by the sweep itself, per point.
RESERVED = ("output_dir", "export_dir", "flagfile")
TRUE, FALSE = ("true", "yes", "1", "t", "y"), ("false", "no", "0", "f", "n")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ENV = "env."  # a key `env.NAME` sets the environment variable NAME of the point's process
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]+")
MAX_VALUE_CHARS, MAX_NAME_CHARS = 40, 150


def _hash(text: str, n: int = 6) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:n]


def flag_kinds() -> dict[str, bool]:
    """Every flag run_distil.py accepts, mapped to whether it is a boolean flag."""
    import xtremedistil_tf  # noqa: F401  (light: no TensorFlow import)
    from absl import app  # noqa: F401  (defines absl's own flags, which run_distil.py accepts)

    from xtremedistil_tf import flags as xflags

    return {name: xflags.FLAGS[name].boolean for name in xflags.FLAGS}


def _bool_value(key: str, value: str) -> str:
    low = value.lower()
    if low in TRUE:
        return "true"
    if low in FALSE:
        return "false"
    raise ValueError(f"--{key} is a boolean flag: {key}={value} should be true or false")


def parse_grid(text: str, kinds: dict[str, bool]) -> list[tuple[str, list[str]]]:
    """Parses `key=v1,v2;key2=w1|w2` into [(key, values)] in the given order.

    Args:
        text: the --grid value (see `xtremedistil_tf.sweep`'s docstring).
        kinds: known flag names mapped to whether they are boolean (`flag_kinds()`).

    Returns:
        (key, values) per key; boolean values are normalised to "true"/"false".

    Raises:
        ValueError: with a one-line message saying what is wrong and how to write it.
    """
    grid: list[tuple[str, list[str]]] = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        if "=" not in part:
            raise ValueError(f"'{part}' has no '=': write key=value1,value2")
        key, _, raw = part.partition("=")
        key = key.strip().lstrip("-")
        is_env = key.startswith(ENV)
        if not _KEY.fullmatch(key[len(ENV):] if is_env else key):
            raise ValueError(f"'{part}': '{key}' is not a flag name "
                             f"(nor {ENV}NAME, an environment variable)")
        if key in RESERVED:
            raise ValueError(f"--{key} is set by the sweep for every point; it cannot be a key")
        if not is_env and key not in kinds:
            close = difflib.get_close_matches(key, list(kinds), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(f"unknown flag '{key}'{hint}")
        if key in (k for k, _ in grid):
            raise ValueError(f"key '{key}' appears twice; give all its values in one list")
        values = [v.strip() for v in raw.split("|" if "|" in raw else ",")]
        if not raw.strip() or any(not v for v in values):
            raise ValueError(f"'{part}': empty value; write {key}=value1,value2 (or "
                             "value1|value2 when values contain commas)")
        if kinds.get(key):
            values = [_bool_value(key, v) for v in values]
        if len(set(values)) != len(values):
            raise ValueError(f"'{part}': a value repeats")
        grid.append((key, values))
    if not grid:
        raise ValueError("no key=values in it: write key=v1,v2;key2=w1,w2")
    return grid


def points(grid: list[tuple[str, list[str]]]) -> list[tuple[tuple[str, str], ...]]:
    """The cartesian product of the grid, first key slowest: one ((key, value), ...) per point."""
    keys = [k for k, _ in grid]
    return [tuple(zip(keys, combo)) for combo in itertools.product(*(v for _, v in grid))]


def short_value(value: str) -> str:
    """A value as people read it: file lists show their languages (`en=a/b.conll` -> `en`), or
    their file names."""
    items = []
    for item in value.split(","):
        lang, sep, path = item.partition("=")
        if sep and ("/" in path or "." in path):
            items.append(lang)
        elif "/" in item:
            items.append(os.path.basename(item.rstrip("/")))
        else:
            items.append(item)
    return ",".join(items)


def _safe_value(value: str) -> str:
    """A path-safe, short spelling of a value; a hash keeps altered or shortened ones unique."""
    safe = _UNSAFE.sub("-", short_value(value).replace(",", "+"))
    safe = re.sub(r"-{2,}", "-", safe).rstrip("-.")
    if safe == value and len(safe) <= MAX_VALUE_CHARS:
        return safe
    return f"{safe[:MAX_VALUE_CHARS - 16].rstrip('-.+')}-{_hash(value)}".lstrip("-")


def point_name(overrides: tuple[tuple[str, str], ...]) -> str:
    """The folder name of a point: `key=value_key2=value2`, safe in paths and deterministic."""
    name = "_".join(f"{k}={_safe_value(v)}" for k, v in overrides)
    if len(name) > MAX_NAME_CHARS:
        full = "\0".join(f"{k}={v}" for k, v in overrides)
        name = f"{name[:MAX_NAME_CHARS - 9].rstrip('-._+')}-{_hash(full, 8)}"
    return name


def flag_args(overrides: tuple[tuple[str, str], ...], kinds: dict[str, bool]) -> list[str]:
    """run_distil.py arguments of a point: --key=value, or --key / --nokey for booleans."""
    out = []
    for key, value in overrides:
        if key.startswith(ENV):
            continue
        if kinds.get(key):
            out.append(f"--{key}" if value == "true" else f"--no{key}")
        else:
            out.append(f"--{key}={value}")
    return out


def env_vars(overrides: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """The environment variables a point sets (its `env.NAME` keys)."""
    return {k[len(ENV):]: v for k, v in overrides if k.startswith(ENV)}


def _flag_name(arg: str, kinds: dict[str, bool]) -> str | None:
    """The flag an argument sets (`--nofoo` sets boolean `foo`), or None for a non-flag."""
    if not arg.startswith("-"):
        return None
    name = arg.lstrip("-").split("=", 1)[0]
    if name not in kinds and name.startswith("no") and kinds.get(name[2:]):
        return name[2:]
    return name


def check_extra(extra: list[str], keys: list[str], kinds: dict[str, bool]) -> None:
    """Rejects flags after `--` that the sweep sets itself or that repeat a grid key."""
    for arg in extra:
        name = _flag_name(arg, kinds)
        if name in ("output_dir", "export_dir"):
            raise ValueError(f"{arg}: the sweep sets --{name} per point; use --output_dir of "
                             "sweep.py instead")
        if name in keys:
            raise ValueError(f"{arg}: --{name} is a grid key; the value after -- would override "
                             "the grid's")
