"""One registry type for everything that can be named on the command line.

Backbones, heads, datasets and transform sets each live in a :class:`Registry`: a ``dict``
from name to factory (so ``HEADS["mine"] = MyHead`` and ``"mine" in HEADS`` work as for any
dict) that also takes a decorator, knows its aliases and gives one-line errors listing the
valid names. Config validation asks the registries at validation time, so an entry a user
registers before building a config is accepted by the configs and the command line::

    from fewshot_sla.heads import HEADS

    @HEADS.register("cosine")
    class CosineHead(nn.Module): ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(dict):
    """Name -> factory, with aliases and one-line lookup errors.

    Args:
        kind: what the entries are, for messages ("head", "backbone", ...).
        option: the command-line option that names an entry ("--head"), for messages.
        aliases: extra spellings, alias -> canonical name.
        case_insensitive: look names up lower-cased (aliases and entries are stored lower-case).
    """

    def __init__(self, kind: str, option: str = "", aliases: dict[str, str] | None = None,
                 case_insensitive: bool = True) -> None:
        super().__init__()
        self.kind = kind
        self.option = option or f"--{kind}"
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

    def names(self) -> list[str]:
        """Registered names in registration order (aliases aside)."""
        return list(self)

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

    def lookup(self, name: str) -> Any:
        """The entry registered as ``name`` (or one of its aliases)."""
        return self[self.canonical(name)]
