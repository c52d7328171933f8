"""Configuration as dataclasses with one source of defaults: dataclass defaults < ``--config
NAME_OR_FILE.toml`` < explicit ``--option value``; field metadata documents each option
(:mod:`fewshot_sla.sections`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from .registry import Registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["CONFIG_DIR", "COMMAND_CONFIGS", "ConfigError", "list_named_configs", "load_config_file",
           "build_config", "config_from_dict", "option_names", "canonical_options",
           "renamed_options", "resume_options", "flag", "parse_options", "config_command", "check_config_command"]

C = TypeVar("C")
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(ValueError):
    """An invalid configuration (unknown key, bad value, missing file)."""


def list_named_configs() -> list[str]:
    """Names of the configurations shipped in ``fewshot_sla/configs`` (and ``configs/``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))


def load_config_file(name_or_path: str | Path) -> dict[str, Any]:
    """Read a TOML config given as a path or as the name of a shipped config."""
    p = Path(name_or_path)
    if not p.exists():
        named = CONFIG_DIR / f"{name_or_path}.toml"
        if not named.exists():
            raise ConfigError(f"config '{name_or_path}' is neither a file nor a named config; named configs: "
                              f"{', '.join(list_named_configs()) or '(none)'}")
        p = named
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {p} is not valid TOML: {e}") from e
    data.pop("description", None)
    return data


def _unwrap_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: _unwrap_optional(hints[f.name]) for f in dataclasses.fields(cls)}


def renamed_options(cls: type) -> dict[str, tuple[str, Any]]:
    """Old option name -> (new name, value converter) of ``cls``: the entries of its ``RENAMED`` table
    (``{"old": "new"}`` or ``{"old": ("new", convert)}``) whose new name is a field and old name is not."""
    fields = {f.name for f in dataclasses.fields(cls)}
    pairs = ((old, new if isinstance(new, tuple) else (new, None)) for old, new in getattr(cls, "RENAMED", {}).items())
    return {old: new for old, new in pairs if new[0] in fields and old not in fields}


def option_names(cls: type) -> set[str]:
    """Names ``cls`` accepts in a dict or on the command line: its fields and renamed options."""
    return {f.name for f in dataclasses.fields(cls) if f.init} | set(renamed_options(cls))


def resume_options(cls: type) -> tuple[str, ...]:
    """The options of ``cls`` that ``--resume`` may change: its fields marked ``resume`` (same numbers)."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("resume"))


def canonical_options(cls: type, data: dict[str, Any], notes: bool = True) -> dict[str, Any]:
    """``data`` with ``-`` spelled ``_`` and renamed options under their new names; with
    ``notes``, one line on stderr per old spelling used (the value given under the new name wins)."""
    norm = {k.replace("-", "_"): v for k, v in data.items()}
    for old, (new, convert) in renamed_options(cls).items():
        if old in norm:
            value = norm.pop(old)
            if notes:
                print(f"note: {flag(old)} is deprecated; use {flag(new)}", file=sys.stderr)
            norm.setdefault(new, convert(value) if convert else value)
    return norm


def config_from_dict(cls: type[C], data: dict[str, Any], source: str = "config", notes: bool = True) -> C:
    """Build ``cls`` from a dict, with an error naming any unknown key and the valid ones. Old option names
    are accepted, with a one-line note each when ``notes`` (off for configs saved by earlier versions)."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    norm = canonical_options(cls, data, notes)
    if unknown := sorted(set(norm) - names):
        raise ConfigError(f"unknown option(s) in {source}: {', '.join(unknown)}; valid options: "
                          f"{', '.join(sorted(names))}")
    types_ = _field_types(cls)
    for k, v in list(norm.items()):
        if typing.get_origin(types_[k]) is tuple and isinstance(v, list):
            norm[k] = tuple(v)
    try:
        return cls(**norm)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid {source}: {e}") from e


def flag(name: str) -> str:
    """Option ``name``'s command-line spelling (``eval_every`` -> ``--eval-every``)."""
    return "--" + name.replace("_", "-")


def _as_flag(key: str, v: Any) -> str:
    """``key``'s command-line spelling with value ``v`` (``--eval-every 0``, ``--no-progress``)."""
    if isinstance(v, bool):
        return flag(key) if v else "--no-" + flag(key)[2:]
    return f"{flag(key)} " + (" ".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v))


def _error(cls: type, data: dict[str, Any], source: str) -> str | None:
    """The reason ``data`` is not a valid ``cls`` (``None`` when it is)."""
    try:
        config_from_dict(cls, data, source=source)
    except ConfigError as e:
        return _reason(e)
    return None


def _reason(e: ConfigError) -> str:
    return str(e.__cause__) if e.__cause__ is not None else str(e)


def build_config(cls: type[C], args: argparse.Namespace | dict[str, Any] | None = None,
                 config: str | Path | None = None) -> C:
    """Layer dataclass defaults < config file < explicit options into a ``cls`` instance. An invalid result
    is blamed on its source: the command-line option(s) whose value made it invalid when the defaults and the
    config file alone are valid (``invalid command-line option --eval-every 0: ...``), else the config file.
    The options blamed are those that give the same reason on their own (an option that is invalid on its
    own for another reason, only next to the defaults, is not blamed), else a minimal set that does."""
    file_data: dict[str, Any] = load_config_file(config) if config is not None else {}
    explicit = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    names = option_names(cls)
    explicit = canonical_options(cls, {k: v for k, v in explicit.items() if k in names})
    source = f"config {config}" if config else "options"
    try:
        return config_from_dict(cls, {**file_data, **explicit}, source=source)
    except ConfigError as e:
        if not explicit or str(e).startswith("unknown option"):
            raise
        if _error(cls, file_data, source) is not None:  # the config (over the defaults) is invalid alone
            raise e from None
        reason = _reason(e)

        def same(keys: list[str]) -> bool:
            return _error(cls, {**file_data, **{k: explicit[k] for k in keys}}, source) == reason

        culprits = [k for k in explicit if same([k])]
        if not culprits:  # only a combination gives this reason: keep a minimal set that still does
            culprits = list(explicit)
            for k in list(culprits):
                if len(culprits) > 1 and same([c for c in culprits if c != k]):
                    culprits.remove(k)
        opts = ", ".join(_as_flag(k, explicit[k]) for k in culprits)
        what = "option" if len(culprits) == 1 else "options"
        raise ConfigError(f"invalid command-line {what} {opts}: {reason}") from None


#: the config class of each training command, registered by the pipelines (tells their config files apart)
COMMAND_CONFIGS = Registry("command")


def config_command(config: str | Path) -> str | None:
    """The command (of :data:`COMMAND_CONFIGS`) a config file or named config is for, told by the keys that
    only one command's config class has (``n_way``, ``head``, ... vs ``batch_size``, ...); ``None`` if unknown."""
    try:
        keys = {k.replace("-", "_") for k in load_config_file(config)}
    except ConfigError:
        return None
    names = {cmd: option_names(cls) for cmd, cls in COMMAND_CONFIGS.items()}
    found = [cmd for cmd, own in names.items() if keys & own.difference(*(v for c, v in names.items() if c != cmd))]
    return found[0] if len(found) == 1 else None


def check_config_command(config: str | Path | None, command: str) -> None:
    """Raise a one-line :class:`ConfigError` when ``config`` belongs to the other command
    (e.g. a supervised config given to ``meta-train``); nothing when it fits or is unknown."""
    if config is None:
        return
    owner = config_command(config)
    if owner is not None and owner != command:
        raise ConfigError(f"{config} is a {owner} config; use fewshot-sla {owner} --config {config}")


def parse_options(value: Any, name: str) -> dict[str, Any]:
    """Parse a ``key=value,key=value`` string (or a JSON object string, or a dict) into a dict: values
    are read as JSON when possible (``16`` -> int, ``true`` -> bool, ``[1,2]`` -> list), else kept as strings."""
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        return {str(k).replace("-", "_"): v for k, v in value.items()}
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be 'key=value,key=value' or a table, got {value!r}")
    text = value.strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{name}: invalid JSON object {text!r} ({e})") from e
        return parse_options(obj, name)
    out: dict[str, Any] = {}
    for item in filter(None, (i.strip() for i in _split_top_level(text))):
        if "=" not in item:
            raise ConfigError(f"{name}: expected key=value, got {item!r} (example: {name.replace('_', '-')} hidden=16)")
        k, v = (s.strip() for s in item.split("=", 1))
        try:
            out[k.replace("-", "_")] = json.loads(v)
        except json.JSONDecodeError:
            out[k.replace("-", "_")] = {"true": True, "false": False}.get(v.lower(), v)
    return out


def options_text(opts: Mapping[str, Any]) -> str:
    """``opts`` spelled as :func:`parse_options` reads it back: ``key=value,...``, keys sorted, booleans
    lowercase (``--dataset-options rotate_classes=false``)."""
    return ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in sorted(opts.items()))


def _split_top_level(text: str) -> list[str]:
    """Split on commas/semicolons outside brackets and quotes (``a=[1,2],b=3`` -> 2 items)."""
    items, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch in ",;" and depth == 0:
            items.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    items.append("".join(cur))
    return items
