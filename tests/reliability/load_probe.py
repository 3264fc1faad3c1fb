"""Run `deltarank spectrum BASE TUNED...` in this process and report what it held while it ran, as JSON.

    python -m tests.reliability.load_probe OUTDIR BASE TUNED [TUNED ...]

After every finished matrix it samples resident memory (RSS), open file descriptors and the tensors read from a
checkpoint that are still alive; whenever a checkpoint file is opened, how many are open at that moment. Printed:
the peaks over the run next to the values before and after it.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import weakref
from typing import Any

import psutil
import torch

import deltarank.cli.spectrum as spectrum_cli
from deltarank.io import safetensors_file


def open_fds() -> list[str]:
    """Targets of this process's open file descriptors."""
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # closed meanwhile (the listing's own descriptor)
            continue
    return targets


def main() -> None:
    outdir, base, *tuned = sys.argv[1:]
    process = psutil.Process()
    alive: weakref.WeakSet[torch.Tensor] = weakref.WeakSet()  # every tensor read from a checkpoint
    before = {"rss": process.memory_info().rss, "fds": len(open_fds())}
    peak = {"rss": 0, "fds": 0, "checkpoint_files": 0, "tensors": 0, "samples": 0}

    read_entry = safetensors_file.read_entry

    def tracked_read(*args: Any, **kwargs: Any) -> torch.Tensor:
        tensor = read_entry(*args, **kwargs)
        alive.add(tensor)
        return tensor

    safetensors_file.read_entry = tracked_read  # type: ignore[assignment]
    path_open = pathlib.Path.open

    def counted_open(self: pathlib.Path, *args: Any, **kwargs: Any) -> Any:
        handle = path_open(self, *args, **kwargs)
        if self.suffix == ".safetensors":  # how many checkpoint files are open at this moment
            files = sum(t.endswith(".safetensors") for t in open_fds())
            peak["checkpoint_files"] = max(peak["checkpoint_files"], files)
        return handle

    pathlib.Path.open = counted_open  # type: ignore[method-assign]

    def sample(done: int, total: int, name: str) -> None:
        fds = open_fds()
        peak["rss"] = max(peak["rss"], process.memory_info().rss)
        peak["fds"] = max(peak["fds"], len(fds))
        peak["tensors"] = max(peak["tensors"], len(alive))
        peak["samples"] += 1

    run = spectrum_cli.spectrum_many

    def sampled_run(*args: Any, progress: Any = None, **kwargs: Any) -> Any:
        def both(done: int, total: int, name: str) -> None:
            sample(done, total, name)
            if progress is not None:
                progress(done, total, name)

        return run(*args, progress=both, **kwargs)

    spectrum_cli.spectrum_many = sampled_run  # type: ignore[assignment]
    from deltarank.cli import main as cli

    cli(args=["spectrum", base, *tuned, "-o", outdir, "--device", "cpu"], standalone_mode=False)
    after = {"rss": process.memory_info().rss, "fds": len(open_fds())}
    print(json.dumps({"before": before, "peak": peak, "after": after}))


if __name__ == "__main__":
    main()
