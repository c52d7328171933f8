"""One command-line grammar: every ``fewshot-sla`` subcommand is generated from dataclasses (a
:class:`Command`'s fields are its ``--field-name`` options). Only given options enter the namespace
(the dataclass holds the defaults); no prefix matching.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import sys
import types
import typing
from collections.abc import Callable
from typing import Any, NoReturn

from .config import (
    CONFIG_DIR,
    ConfigError,
    build_config,
    canonical_options,
    check_config_command,
    flag,
    option_names,
    renamed_options,
)
from .registry import Registry
from .sections import option

__all__ = ["Command", "COMMANDS", "command", "option", "Parser", "add_options", "add_command",
           "run_config", "describe_configs"]


@dataclasses.dataclass(frozen=True)
class Command:
    """A subcommand: ``run(args) -> exit status`` with the fields of ``options`` as its options."""

    name: str
    run: Callable[[argparse.Namespace], int]
    options: tuple[type, ...]
    help: str
    description: str = ""


#: every subcommand, added by :func:`command` when its module is imported
COMMANDS = Registry("command", case_insensitive=False)


def command(name: str, *options: type, help: str, description: str = "") -> Callable:  # noqa: A002
    """Decorator adding ``run`` to :data:`COMMANDS` as subcommand ``name``."""

    def deco(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = Command(name, run, options, help, description)
        return run

    return deco


class Parser(argparse.ArgumentParser):
    """``argparse`` without prefix matching; an unknown option is one line naming the nearest real one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        ns, extras = super().parse_known_args(args, namespace)
        if extras:
            flag = next((a.split("=")[0] for a in extras if a.startswith("-")), extras[0])
            near = difflib.get_close_matches(flag, [s for a in self._actions for s in a.option_strings], n=1)
            self.error(("unknown option " if flag.startswith("-") else "unexpected argument ") + flag
                       + (f"; did you mean {near[0]}?" if near else "; see --help"))
        return ns, extras

    def error(self, message: str) -> NoReturn:
        """A bad command line is one line on stderr (no usage block: ``--help`` shows it), exit status 2."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def _add(parser: Any, name: str, tp: Any, meta: Any, default: Any) -> None:
    kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": meta.get("help", "")}
    if default not in (dataclasses.MISSING, None) and kwargs["help"] != argparse.SUPPRESS:
        kwargs["help"] = f"{kwargs['help']} (default: {default})".lstrip()
    kwargs.update({k: meta[k] for k in ("choices", "metavar") if k in meta})
    if typing.get_origin(tp) in (typing.Union, types.UnionType):  # X | None: X
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if tp is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(tp) in (tuple, list):
        kwargs.update(nargs="+", type=typing.get_args(tp)[0])
    else:
        kwargs["type"] = tp if tp in (int, float) else str
    if meta.get("positional"):
        parser.add_argument(name, **kwargs)
    else:
        parser.add_argument(flag(name), dest=name, required=default is dataclasses.MISSING,
                            **kwargs)


def add_options(parser: argparse.ArgumentParser | Any, cls: type) -> None:
    """Add one option per field of dataclass ``cls`` (and a hidden one per old spelling)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.init:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            _add(parser, f.name, hints[f.name], f.metadata, default)
    for old, (new, _) in renamed_options(cls).items():
        _add(parser, old, hints[new], {"help": argparse.SUPPRESS}, None)


def add_command(subparsers: Any, cmd: Command) -> argparse.ArgumentParser:
    """The parser of ``cmd``; its usage line shows the positionals and required options only."""
    raw = "\n" in cmd.description  # a module docstring: keep its layout
    p = subparsers.add_parser(cmd.name, help=cmd.help, description=cmd.description or None,
                              formatter_class=argparse.RawDescriptionHelpFormatter if raw else argparse.HelpFormatter)
    for cls in cmd.options:
        add_options(p.add_argument_group(f"options ({cls.__name__})"), cls)
    usage = ["%(prog)s"]
    for a in p._actions:
        m = a.metavar or a.dest.upper()
        if a.required or not a.option_strings:
            usage += [*a.option_strings[:1], f"{m} [{m} ...]" if a.nargs == "+" else m]
    p.usage = " ".join([*usage, "[options]"])
    p.set_defaults(func=cmd.run)
    return p


def run_config(cls: type, args: argparse.Namespace, command: str, config: str | None, resume: str | None,
               resume_config: Callable[[str, dict[str, Any]], Any]) -> Any:
    """The config of a run: defaults < ``--config`` < options, or ``resume_config(RUN, options)``."""
    explicit = {k: v for k, v in vars(args).items() if k in option_names(cls)}
    if resume is not None:
        if config:
            raise ConfigError("--config cannot be combined with --resume (the run keeps its saved configuration)")
        return resume_config(resume, canonical_options(cls, explicit))
    check_config_command(config, command)
    return build_config(cls, explicit, config=config)


def describe_configs(names: list[str]) -> list[str]:
    """``name  description`` per named config (its TOML ``description`` key, on one line)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    out = []
    for name in names:
        try:
            desc = tomllib.loads((CONFIG_DIR / f"{name}.toml").read_text()).get("description", "")
        except Exception:  # noqa: BLE001 - listing must not fail on one bad file
            desc = "(unreadable)"
        out.append(f"{name:<36} {' '.join(desc.split())}")
    return out
