"""One reference page per `deltarank` subcommand, read from its click command object.

The page holds what `deltarank NAME -h` knows (usage, the command's help, every argument and option with its
help, metavar, default and choices) and the files the command writes (`deltarank.docsite.formats`).
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from deltarank.cli import main
from deltarank.docsite.markdown import NO_VALUE, code, prose, table, value_text

PROGRAM = "deltarank"


def command_page(name: str, command: click.Command, outputs: Sequence[str] = ()) -> str:
    """The Markdown page of `deltarank NAME`.

    Args:
        name: The subcommand's name (`spectrum`).
        command: Its click command.
        outputs: Markdown sections on the files it writes, appended under "Output files".
    """
    # the program's own context settings (-h besides --help): click keeps each command's help option from the
    # first context that asks, so a plain group here would leave `deltarank NAME -h` broken in this process
    group = click.Context(click.Group(PROGRAM, context_settings=main.context_settings), info_name=PROGRAM)
    ctx = click.Context(command, info_name=name, parent=group)
    parts = [f"# {PROGRAM} {name}", "```text\n" + command.get_usage(ctx) + "\n```", prose(command.help)]
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    if arguments:
        described = [
            (code(p.make_metavar(ctx)), _type_text(p.type), "yes" if p.required else "no") for p in arguments
        ]
        parts += ["## Arguments", table(("argument", "type", "required"), described)]
    options = [p for p in command.params if isinstance(p, click.Option) and not p.hidden]
    rows = [_option_row(p, ctx) for p in options]
    rows.append((code("-h, --help"), NO_VALUE, NO_VALUE, NO_VALUE, "Show the help and exit."))
    parts += ["## Options", table(("option", "metavar", "default", "choices", "help"), rows)]
    parts += ["## Output files", *(outputs or ["This command writes no result file."])]
    return "\n\n".join(part for part in parts if part) + "\n"


def option_names(option: click.Option) -> str:
    """Every spelling of an option (`-o, --output`; `--x / --no-x` for an on/off pair)."""
    names = ", ".join(option.opts)
    if option.secondary_opts:
        names += " / " + ", ".join(option.secondary_opts)
    return names


def _option_row(option: click.Option, ctx: click.Context) -> tuple[str, str, str, str, str]:
    flag = option.is_flag or option.count
    metavar = NO_VALUE if flag else code(option.make_metavar(ctx))
    help_text = option.help or ""
    if option.required:
        help_text = "Required. " + help_text
    if option.multiple:
        help_text += " (may be repeated)"
    return (code(option_names(option)), metavar, _default(option, ctx), _choices(option.type), help_text)


def _default(option: click.Option, ctx: click.Context) -> str:
    value = option.get_default(ctx, call=False)
    if callable(value):
        return "computed"
    if _unset(value) or (option.is_flag and value is False and not option.secondary_opts):
        return NO_VALUE
    if option.count and value == 0:
        return NO_VALUE
    if option.is_flag and option.secondary_opts:
        return code(option.opts[0] if value else option.secondary_opts[0])
    return code(value_text(value))


def _unset(value: object) -> bool:
    """None or click's own "no default" sentinel."""
    return value is None or getattr(value, "name", None) == "UNSET"


def _choices(kind: click.ParamType) -> str:
    if isinstance(kind, click.Choice):
        return ", ".join(code(choice) for choice in kind.choices)
    if isinstance(kind, click.IntRange | click.FloatRange):
        return code(range_text(kind.min, kind.max, kind.min_open, kind.max_open))
    return NO_VALUE


def range_text(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    """A number range as click's help writes it (`x>=1`, `0<=x<1`)."""
    if low is None:
        return f"x{'<' if high_open else '<='}{high}"
    if high is None:
        return f"x{'>' if low_open else '>='}{low}"
    return f"{low}{'<' if low_open else '<='}x{'<' if high_open else '<='}{high}"


def _type_text(kind: click.ParamType) -> str:
    if isinstance(kind, click.Path):
        return "path"
    return str(kind.name)
