"""Measure a proposed fix before it lands: run the daemon with named patches applied.

    python -m bench.experiment switch_interval serve
    python -m bench.intake --daemon-args "-m bench.experiment switch_interval serve"

The shipped code is never changed by this module; each patch here is the smallest version of a
change proposed in BENCHMARKS.md for a file the benchmarks may not edit, so that the proposal
comes with measured numbers. Patches are applied in the daemon process only. (The patches that
measured F1-F5 and the sandbox's `nodelay` were dropped once those fixes landed.)
"""

import sys


def switch_interval() -> None:
    """CPython's GIL switch interval at 1 ms instead of 5 ms: a webhook thread waiting for the
    GIL behind a busy outbox or planner thread gets it sooner, at some cost in switching."""
    sys.setswitchinterval(0.001)


def accept_only() -> None:
    """A ceiling: the accept path with every background step switched off (nothing planned,
    nothing issued). What the webhook itself can do in this stack on this machine."""
    import daemon.worker

    daemon.worker.run_due = lambda ctx, now=None, workers=0: None


PATCHES = {
    "accept_only": accept_only,
    "switch_interval": switch_interval,
}


def main(argv: list[str]) -> int:
    """`PATCHES ARGS…`: ARGS as for `python -m daemon` (serve, sandbox proxy, simulate…)."""
    names = argv[0].split(",") if argv else []
    for name in names:
        PATCHES[name]()
    from daemon.__main__ import main as daemon_main

    return daemon_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
