"""One registry type for everything that can be named on the command line.

A :class:`Registry` is a ``dict`` name -> factory with a ``register`` decorator, aliases,
:meth:`Registry.build` (timm's ``create_model``: options pass through) and one-line errors naming
the valid names and options. Configs ask the registries when they validate, so an entry registered
before (``@HEADS.register("mine")``) works from the command line (``--head mine --head-options k=v``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

__all__ = ["Registry", "UnknownOptionError"]

T = TypeVar("T")


class UnknownOptionError(TypeError, ValueError):
    """An option the factory does not take: a ``TypeError`` (as Python's for an unexpected
    keyword) and a ``ValueError`` (as the package's other bad input)."""


class Registry(dict):
    """Name -> factory, with aliases (alias -> name), ``build(name, **options)`` and one-line errors
    naming the ``kind`` of entry; names are looked up lower-cased when ``case_insensitive``."""

    def __init__(self, kind: str, aliases: dict[str, str] | None = None, case_insensitive: bool = True) -> None:
        super().__init__()
        self.kind = kind
        self.aliases: dict[str, str] = dict(aliases or {})
        self.case_insensitive = case_insensitive

    def register(self, name: str | None = None, *, aliases: Iterable[str] = ()) -> Callable[[T], T]:
        """Decorator registering a factory under ``name`` (default: its ``__name__``)."""

        def deco(obj: T) -> T:
            key = name or getattr(obj, "__name__", None)
            if not key:
                raise ValueError(f"cannot register a {self.kind} without a name")
            self[key] = obj
            for a in aliases:
                self.aliases[a] = key
            return obj

        return deco

    def canonical(self, name: str) -> str:
        """The registered name ``name`` stands for; ``ValueError`` listing the valid names if none."""
        key = str(name).strip()
        if self.case_insensitive:
            key = key.lower()
        key = self.aliases.get(key, key)
        if key not in self:
            extra = f" (aliases: {', '.join(self.aliases)})" if self.aliases else ""
            raise ValueError(f"unknown {self.kind} {str(name)!r}; choose one of: {', '.join(sorted(self))}{extra}")
        return key

    def build(self, name: str, /, *args: Any, **options: Any) -> Any:
        """Call the factory registered as ``name`` (or an alias) with ``args`` and ``options``.

        An option its signature does not take (and no ``**kwargs``) is refused before the call:
        :class:`UnknownOptionError`, one line naming the valid options; a ``TypeError`` of the call
        (a ``**kwargs`` factory refusing an option, an option of the wrong type) becomes a ``ValueError``.
        """
        key = self.canonical(name)
        factory = self[key]
        params = list(inspect.signature(factory).parameters.values())
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            valid = [p.name for p in params[len(args):] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
            unknown = sorted(set(options) - set(valid))
            if unknown:
                raise UnknownOptionError(f"{self.kind} {key!r} got unknown option(s) {unknown}; "
                                         f"valid options: {', '.join(valid) or 'none'}")
        try:
            return factory(*args, **options)
        except TypeError as e:
            raise ValueError(f"{self.kind} {key!r}: {e}") from e
