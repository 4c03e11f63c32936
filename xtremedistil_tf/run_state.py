"""Which steps of a run are finished, so that rerunning the same command resumes it."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time

from xtremedistil_tf import config as config_lib, report


class RunState:
    """Which steps of a run are finished (`state.json`), for resuming.

    A folder is resumed only by a run with the same settings (`config.setting_changes`: fields
    added by a newer version of this package count only when set away from their defaults).
    """

    def __init__(self, output_dir: str, cfg: config_lib.RunConfig):
        self.path = os.path.join(output_dir, "state.json")
        self.clock: RunClock | None = None  # written with every finished step
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
        if self.clock:
            self.clock.seconds()


class RunClock:
    """The run's wall time over every attempt: `wall.json` in the run folder holds the seconds
    of the earlier attempts plus this one's so far, rewritten by `seconds()`: every `interval`
    seconds and whenever `RunState.mark` records a finished step (a killed attempt loses at most
    the time since).

    `with RunClock(folder) as clock: ...; clock.seconds()` -> the total so far.
    """

    def __init__(self, output_dir: str, interval: float = 30.0):
        self.path = os.path.join(output_dir, "wall.json")
        self.interval = interval
        self.before = 0.0
        self.attempts = 1
        if os.path.exists(self.path):
            try:
                with open(self.path, encoding="utf-8") as f:
                    saved = json.load(f)
                self.before, self.attempts = float(saved["seconds"]), int(saved["attempts"]) + 1
            except (OSError, ValueError, KeyError, TypeError):
                pass  # an unreadable clock counts from here
        self.start = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)

    def __enter__(self) -> RunClock:
        self.seconds()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.seconds()

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self.seconds()

    def seconds(self) -> float:
        """Wall seconds of all attempts so far; also written to `wall.json`."""
        total = self.before + time.time() - self.start
        report.write_json(self.path, {"seconds": total, "attempts": self.attempts})
        return total
