"""A quiet console (#24 "Console"): a tiny study prints only deltarank's own lines on stderr; other libraries'
known-harmless warnings, log records and bars are filtered in one place (`deltarank.io.console`), unknown ones
still show; bitsandbytes is imported only for 4-bit weights (`deltarank.io.bitsandbytes_gate`).

Before: 28 of 33 stderr lines of a 4-run tiny study were other libraries' (weight-loading and shard-writing
bars, peft's `is_gradient_checkpointing` FutureWarning, bitsandbytes' "Failed to load CPU gemm_4bit_forward").
The checks run in subprocesses: pytest's own warning capture would hide what a user sees.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.study.tiny_study import tiny_study, write_study_file
from tests.train.conftest import save_tiny_model

# Every line deltarank itself writes to stderr during a study.
OWN_LINES = {
    "study note": r"study: .+",
    "base measured": r"base \d+/\d+ \S+: .+",
    "run i/N": r"run \d+/\d+ \S+: .+",
    "files written": r"Wrote .+",
    "deltarank log record": r"(DEBUG|INFO|WARNING|ERROR|CRITICAL) deltarank(\.\w+)*: .+",
    "progress line": r"[\w -]+: \d+(/\d+)? \w+( \(\d+%\))?, .+ elapsed.*",
    "error": r"Error: .+",
}
OWN = re.compile("|".join(f"(?:{pattern})" for pattern in OWN_LINES.values()))
GRID = [
    {"method": "full"},
    {"method": "lora", "lora_r": 2},
    {
        "method": "qlora",
        "lora_r": 2,
    },  # bitsandbytes imported (and its kernel warning filtered) after LoRA runs
    {"method": "adapter", "adapter_size": 4},
]


def deltarank(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": ""}
    command = [sys.executable, "-m", "deltarank", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.slow
def test_a_tiny_study_prints_only_deltarank_lines(tmp_path: Path) -> None:
    """Four runs (full, LoRA, QLoRA, bottleneck adapter: every loading path) through the CLI."""
    # hidden 64 / MLP 128: bitsandbytes' CPU 4-bit kernels (QLoRA) need in_features >= 64
    model = save_tiny_model(tmp_path / "wide", hidden_size=64, intermediate_size=128)
    study = write_study_file(tmp_path / "study.yaml", tiny_study(tmp_path, model, grid={"method": GRID}))
    done = deltarank("study", str(study), "-o", str(tmp_path / "out"), "--device", "cpu")
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert sum(line.startswith("run ") for line in lines) == 4, done.stderr
    foreign = [line for line in lines if not OWN.fullmatch(line)]
    assert foreign == [], done.stderr


FILTER_PROBE = """
import logging, sys, warnings
logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
from deltarank.io import console
console.install()
warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
warnings.warn("an unknown library warning", FutureWarning)
bnb = logging.getLogger("bitsandbytes.backends.cpu.ops")
bnb.warning("Failed to load CPU gemm_4bit_forward from kernels-community: offline")
bnb.warning("an unknown bitsandbytes problem")
logging.getLogger("deltarank.probe").warning("deltarank's own warning")
from tqdm.auto import tqdm
for desc in ("Loading weights", "An unknown bar"):
    for _ in tqdm(range(2), desc=desc, file=sys.stderr):
        pass
"""


def test_known_harmless_messages_are_filtered_and_unknown_ones_show() -> None:
    done = subprocess.run([sys.executable, "-c", FILTER_PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    err = done.stderr
    for shown in ("an unknown library warning", "WARNING bitsandbytes.backends.cpu.ops: an unknown bitsandbytes",
                  "WARNING deltarank.probe: deltarank's own warning", "An unknown bar"):  # fmt: skip
        assert shown in err, err
    for hidden in ("is_gradient_checkpointing", "gemm_4bit_forward", "Loading weights"):
        assert hidden not in err, err


GATE_PROBE = """
import sys
from deltarank.io import console
console.install()
import peft, transformers
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM
config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=64)
get_peft_model(LlamaForCausalLM(config), LoraConfig(r=2, target_modules=["q_proj"]))
print("held back:", sys.modules.get("bitsandbytes") is None)
from deltarank.train.models import bnb_config
from deltarank.io.quantization import QLORA_NF4
bnb_config(QLORA_NF4)
from peft.import_utils import is_bnb_4bit_available
from transformers.utils.import_utils import is_bitsandbytes_available
print("allowed:", is_bnb_4bit_available(), is_bitsandbytes_available())
"""


def test_bitsandbytes_is_imported_only_for_4_bit_weights() -> None:
    """`import peft` and building a LoRA model leave bitsandbytes unimported; QLoRA's config lets it in, and
    peft and transformers then find it (their cached "not available" answers are cleared)."""
    pytest.importorskip("bitsandbytes")
    done = subprocess.run([sys.executable, "-c", GATE_PROBE], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "held back: True" in done.stdout and "allowed: True True" in done.stdout, done.stdout
    assert "gemm_4bit_forward" not in done.stderr, done.stderr


WORKER_PROBE = """
from deltarank.io import console
from deltarank.study.run.executors import ProcessExecutor
if __name__ == "__main__":
    console.install()
    executor = ProcessExecutor(1)
    print("worker filters:", executor.run_wave([(console.installed, ())]))
    executor.close()
"""


def test_a_studys_worker_processes_filter_like_the_cli(tmp_path: Path) -> None:
    """`study --jobs N` trains in spawned processes: they install the same filters as the CLI that started them
    (before, every worker printed the bars and warnings again)."""
    script = tmp_path / "probe.py"
    script.write_text(WORKER_PROBE)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "worker filters: [True]" in done.stdout, done.stdout


def test_a_command_run_inside_python_leaves_bitsandbytes_importable() -> None:
    """The CLI holds bitsandbytes back only while its command runs: a command run in-process (CliRunner, as
    the tests do) must not leave `import bitsandbytes` failing for the rest of the process."""
    from click.testing import CliRunner

    from deltarank.cli import main
    from deltarank.io.bitsandbytes_gate import held_back

    result = CliRunner().invoke(main, ["evaluate", "--data", "builtin:zh-text:test"])
    assert result.exit_code == 2, result.output  # neither --model nor --tuned: refused after the group ran
    assert not held_back()
