"""Run the real `deltarank` command line with each unit of work slowed down, so a test can interrupt it mid-run.

    python -m tests.reliability.slowed SECONDS spectrum BASE TUNED ...   (sleep before each matrix)
    python -m tests.reliability.slowed SECONDS train ...                 (sleep in each training step)

Everything else (reading, signals, caching, writing) is the production code path. SIGINT is reset to Python's
default handler, as in an interactive terminal, because a test runner may start children with it ignored.
"""

from __future__ import annotations

import signal
import sys
import time
from typing import Any


def _slow_spectrum(delay: float) -> None:
    import deltarank.analysis.engine.run as engine

    measure = engine.measure_batch

    def slowed(*args: Any, **kwargs: Any) -> Any:
        time.sleep(delay)
        return measure(*args, **kwargs)

    engine.measure_batch = slowed


def _slow_training(delay: float) -> None:
    from transformers import Trainer

    step = Trainer.training_step

    def slowed(self: Any, *args: Any, **kwargs: Any) -> Any:
        time.sleep(delay)
        return step(self, *args, **kwargs)

    Trainer.training_step = slowed  # type: ignore[method-assign]


def main() -> None:
    delay, args = float(sys.argv[1]), sys.argv[2:]
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args[0] == "spectrum":
        _slow_spectrum(delay)
    elif args[0] == "train":
        _slow_training(delay)
    from deltarank.cli import main as cli

    cli(args=args, prog_name="deltarank")


if __name__ == "__main__":
    main()
