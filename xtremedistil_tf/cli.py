"""How the package's commands take flags: absl, like run_distil.py.

Each command module has `define_flags(fv)` (its flags, into a FlagValues) and
`run_from_flags(fv) -> exit status`. As a program it runs through `absl.app.run`
(`--flagfile`, `--helpfull`, `--nofoo` booleans, and absl's own `-v`/`--verbosity`, which
the commands leave as given); in-process (tests, notebooks) `main(argv)` parses into a
private FlagValues, so repeated calls and the run_distil.py flags of `xtremedistil_tf.flags`
(same names, e.g. --export_dir) never collide.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from absl import app, flags

Define = Callable[[flags.FlagValues], None]
Run = Callable[[flags.FlagValues], int]


def main(define: Define, run: Run, prog: str, argv: Sequence[str] | None = None) -> int:
    """Parses `argv` (default sys.argv[1:]) into fresh flags and runs; returns the exit status.

    A flag error is one `error:` line on stderr and status 2.
    """
    fv = flags.FlagValues()
    define(fv)
    try:
        rest = fv([prog, *(sys.argv[1:] if argv is None else argv)])
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if len(rest) > 1:
        print(f"error: unexpected arguments: {' '.join(rest[1:])}", file=sys.stderr)
        return 2
    return run(fv)


def run_app(define: Define, run: Run) -> None:
    """The `if __name__ == "__main__"` of a command: absl's app.run over the global FLAGS."""
    define(flags.FLAGS)

    def app_main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        return run(flags.FLAGS)

    app.run(app_main)
