"""Which steps of a run are finished, so that rerunning the same command resumes it."""

from __future__ import annotations

import dataclasses
import json
import os

from xtremedistil_tf import config as config_lib, report


class RunState:
    """Which steps of a run are finished (`state.json`), for resuming.

    A folder is resumed only by a run with the same settings (`config.setting_changes`: fields
    added by a newer version of this package count only when set away from their defaults).
    """

    def __init__(self, output_dir: str, cfg: config_lib.RunConfig):
        self.path = os.path.join(output_dir, "state.json")
        self.state = {"settings": json.loads(json.dumps(dataclasses.asdict(cfg))), "done": {}}
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                previous = json.load(f)
            changes = config_lib.setting_changes(previous.get("settings", {}), cfg)
            if changes:
                raise ValueError(
                    f"{output_dir} holds a run with other settings ({'; '.join(changes[:3])}); "
                    "use a new --output_dir, or delete that folder to start again")
            self.state = previous

    def done(self, step: str):
        return self.state["done"].get(step)

    def mark(self, step: str, info) -> None:
        self.state["done"][step] = info
        report.write_json(self.path, self.state)
