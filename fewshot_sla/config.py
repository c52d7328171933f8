"""Configuration as dataclasses with one source of defaults.

A run's configuration is a dataclass whose field defaults are the only defaults. The
command line is generated from the fields (``--field-name``), a named or file config
(TOML) may override the defaults, and explicit command-line options override both::

    defaults (dataclass)  <  --config NAME_OR_FILE.toml  <  --option value

Field metadata ``help`` (and optionally ``choices``) documents each option.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "CONFIG_DIR",
    "ConfigError",
    "list_named_configs",
    "load_config_file",
    "build_config",
    "config_from_dict",
    "option_names",
    "canonical_options",
    "renamed_options",
    "parse_options",
    "config_command",
    "check_config_command",
]

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
            raise ConfigError(
                f"config '{name_or_path}' is neither a file nor a named config; named configs: "
                f"{', '.join(list_named_configs()) or '(none)'}"
            )
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
    """Old option name -> (new name, value converter) of ``cls`` (its ``RENAMED`` class
    attribute: ``{"old": "new"}`` or ``{"old": ("new", convert)}``)."""
    out = {}
    for old, new in getattr(cls, "RENAMED", {}).items():
        out[old] = new if isinstance(new, tuple) else (new, None)
    return out


def option_names(cls: type) -> set[str]:
    """Names ``cls`` accepts in a dict or on the command line: its fields and renamed options."""
    return {f.name for f in dataclasses.fields(cls) if f.init} | set(renamed_options(cls))


def canonical_options(cls: type, data: dict[str, Any], notes: bool = True) -> dict[str, Any]:
    """``data`` with ``-`` spelled ``_`` and renamed options under their new names; with
    ``notes``, one line on stderr per old spelling used (the value given under the new name wins)."""
    norm = {k.replace("-", "_"): v for k, v in data.items()}
    for old, (new, convert) in renamed_options(cls).items():
        if old not in norm:
            continue
        value = norm.pop(old)
        if notes:
            print(f"note: --{old.replace('_', '-')} is deprecated; use --{new.replace('_', '-')}", file=sys.stderr)
        norm.setdefault(new, convert(value) if convert else value)
    return norm


def config_from_dict(cls: type[C], data: dict[str, Any], source: str = "config", notes: bool = True) -> C:
    """Build ``cls`` from a dict, with an error naming any unknown key and the valid ones.

    Old option names (:func:`renamed_options`) are accepted; ``notes`` prints a one-line
    deprecation note for each (off for configs saved by earlier versions)."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    norm = canonical_options(cls, data, notes)
    unknown = sorted(set(norm) - names)
    if unknown:
        raise ConfigError(
            f"unknown option(s) in {source}: {', '.join(unknown)}; valid options: {', '.join(sorted(names))}"
        )
    types_ = _field_types(cls)
    for k, v in list(norm.items()):
        if typing.get_origin(types_[k]) is tuple and isinstance(v, list):
            norm[k] = tuple(v)
    try:
        return cls(**norm)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid {source}: {e}") from e


def _as_flag(key: str, v: Any) -> str:
    """``key``'s command-line spelling with value ``v`` (``--eval-every 0``, ``--no-progress``)."""
    flag = "--" + key.replace("_", "-")
    if isinstance(v, bool):
        return flag if v else "--no-" + flag[2:]
    if isinstance(v, (list, tuple)):
        return f"{flag} " + " ".join(str(x) for x in v)
    return f"{flag} {v}"


def build_config(cls: type[C], args: argparse.Namespace | dict[str, Any] | None = None,
                 config: str | Path | None = None) -> C:
    """Layer dataclass defaults < config file < explicit options into a ``cls`` instance.

    An invalid result is blamed on its source: when the defaults and the config file alone
    are valid, the error names the command-line option(s) whose value made it invalid
    (``invalid command-line option --eval-every 0: ...``), otherwise the config file.
    """
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
        try:  # is the config (over the defaults) valid without the command line?
            config_from_dict(cls, file_data, source=source)
        except ConfigError:
            raise e from None

        def fails(keys: list[str]) -> bool:
            try:
                config_from_dict(cls, {**file_data, **{k: explicit[k] for k in keys}}, source=source)
            except ConfigError:
                return True
            return False

        culprits = [k for k in explicit if fails([k])]
        if not culprits:  # only a combination fails: keep a minimal set of options that still fails
            culprits = list(explicit)
            for k in list(culprits):
                if len(culprits) > 1 and fails([c for c in culprits if c != k]):
                    culprits.remove(k)
        opts = ", ".join(_as_flag(k, explicit[k]) for k in culprits)
        what = "option" if len(culprits) == 1 else "options"
        reason = str(e.__cause__) if e.__cause__ is not None else str(e)
        raise ConfigError(f"invalid command-line {what} {opts}: {reason}") from None


# keys that only one command's configs hold: a config file is told apart by them
_COMMAND_KEYS: dict[str, frozenset[str]] = {
    "meta-train": frozenset({"n_way", "k_shot", "n_query", "head", "tasks_per_batch", "episodes_per_epoch",
                             "eval_way", "eval_shot"}),
    "supervised": frozenset({"iterations", "batch_size", "imbalance_ratio", "loss", "drw", "joint_loss",
                             "val_size", "eval_every"}),
}


def config_command(config: str | Path) -> str | None:
    """The command a config is for: ``"supervised"`` or ``"meta-train"``; ``None`` when unknown.

    A named config's name tells (``supervised_*`` are the supervised pipeline's); a file is
    told apart by keys that only one command has (``n_way``, ``head``, ... vs
    ``batch_size``, ``iterations``, ...).
    """
    p = Path(config)
    if not p.exists() and (CONFIG_DIR / f"{config}.toml").exists():
        return "supervised" if str(config).startswith("supervised") else "meta-train"
    try:
        keys = {k.replace("-", "_") for k in load_config_file(config)}
    except ConfigError:
        return None
    found = [cmd for cmd, marks in _COMMAND_KEYS.items() if keys & marks]
    return found[0] if len(found) == 1 else None


def check_config_command(config: str | Path | None, command: str) -> None:
    """Raise a one-line :class:`ConfigError` when ``config`` belongs to the other command
    (e.g. a supervised config given to ``meta-train``); nothing when it fits or is unknown."""
    if config is None:
        return
    owner = config_command(config)
    if owner is not None and owner != command:
        kind = "a supervised" if owner == "supervised" else "a meta-training"
        raise ConfigError(f"{config} is {kind} config; use fewshot-sla {owner} --config {config}")


def parse_options(value: Any, name: str) -> dict[str, Any]:
    """Parse a ``key=value,key=value`` string (or a JSON object string, or a dict) into a dict.

    Values are read as JSON when possible (``16`` -> int, ``true`` -> bool, ``[1,2]`` ->
    list), else kept as strings. Used for ``--backbone-options`` and ``--dataset-options``.
    """
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
    for item in _split_top_level(text):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise ConfigError(f"{name}: expected key=value, got {item!r} (example: {name.replace('_', '-')} hidden=16)")
        k, v = (s.strip() for s in item.split("=", 1))
        try:
            out[k.replace("-", "_")] = json.loads(v)
        except json.JSONDecodeError:
            lowered = v.lower()
            out[k.replace("-", "_")] = {"true": True, "false": False}.get(lowered, v)
    return out


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
