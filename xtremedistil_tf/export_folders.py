"""The folders exports live in: `<export_dir>/<name>/<version>/`, TF Serving's layout.

Versions are integers, written atomically (`new_version`) and never overwritten; every format
(SavedModel, LiteRT, Hugging Face) carries the same `assets/` (`write_assets`), and
`<export_dir>/models.config` lists every SavedModel for `tensorflow_model_server
--model_config_file` (`write_models_config`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator

LABELS_FILE = "labels.txt"
MODELS_CONFIG = "models.config"
# Where `scripts/serve.sh` mounts the export folder in the tensorflow/serving container.
CONTAINER_BASE = "/models"


def next_version(base: str) -> int:
    """1 + the largest integer-named version folder under `base` (1 when there is none)."""
    if not os.path.isdir(base):
        return 1
    versions = [int(d) for d in os.listdir(base) if d.isdigit()]
    return max(versions, default=0) + 1


def version_folder(export_dir: str, name: str, version: int | None = None) -> str:
    """`export_dir/name/version` (default: the next free version), checked to be new.

    Raises:
        FileExistsError: that version exists (versions are never overwritten).
    """
    base = os.path.join(export_dir, name)
    final = os.path.join(base, str(version or next_version(base)))
    if os.path.exists(final):
        raise FileExistsError(f"{final} exists; exported versions are never overwritten")
    return final


def exported_models(export_dir: str) -> list[str]:
    """Names of the models under `export_dir`: folders with a version holding saved_model.pb."""
    if not os.path.isdir(export_dir):
        return []
    names = []
    for name in sorted(os.listdir(export_dir)):
        base = os.path.join(export_dir, name)
        if name.startswith(".") or not os.path.isdir(base):
            continue
        if any(v.isdigit() and os.path.isfile(os.path.join(base, v, "saved_model.pb"))
               for v in os.listdir(base)):
            names.append(name)
    return names


def models_config_text(names: list[str], base: str = CONTAINER_BASE) -> str:
    """TF Serving's `ModelServerConfig` (text protobuf) serving `names` from `base/<name>`."""
    entries = "".join(
        "  config {\n"
        f"    name: {json.dumps(name)}\n"
        f"    base_path: {json.dumps(base.rstrip('/') + '/' + name)}\n"
        '    model_platform: "tensorflow"\n'
        "  }\n"
        for name in names)
    return "model_config_list {\n" + entries + "}\n"


def write_models_config(export_dir: str, base: str = CONTAINER_BASE) -> str:
    """Rewrites `export_dir/models.config` atomically from the folders there; returns its path.

    Base paths are `base/<name>`: `/models/<name>` where `scripts/serve.sh` mounts `export_dir`
    in the tensorflow/serving container (it rewrites them for a local `tensorflow_model_server`).
    The file is rebuilt from what is on disk, so concurrent exports cannot lose each other's
    entries: the last writer saw every finished version.
    """
    path = os.path.join(export_dir, MODELS_CONFIG)
    fd, tmp = tempfile.mkstemp(prefix=f".{MODELS_CONFIG}-", dir=export_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(models_config_text(exported_models(export_dir), base))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def write_assets(folder: str, labels, tokenizer) -> list[str]:
    """Writes `labels.txt` (one label per line, id order) and the tokenizer files into `folder`;
    returns their paths, sorted."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, LABELS_FILE), "w", encoding="utf-8") as f:
        f.write("".join(label + "\n" for label in labels))
    tokenizer.save_pretrained(folder)
    return sorted(os.path.join(folder, p) for p in os.listdir(folder))


@contextlib.contextmanager
def new_version(final: str) -> Iterator[str]:
    """Yields a staging folder; `<staging>/model` becomes `final` when the block succeeds.

    The staging folder is a hidden sibling of `final`, so the rename is atomic and a server or
    client never sees a half-written version; it is removed whatever happens.

    Raises:
        FileExistsError: `final` exists (also when it appeared while the block ran).
    """
    if os.path.exists(final):
        raise FileExistsError(f"{final} exists; exported versions are never overwritten")
    base, version = os.path.split(final)
    os.makedirs(base, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{version}-", dir=base)
    try:
        yield staging
        try:
            os.rename(os.path.join(staging, "model"), final)
        except OSError:
            if os.path.exists(final):
                raise FileExistsError(
                    f"{final} exists; exported versions are never overwritten") from None
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
