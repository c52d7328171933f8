"""Error hints that name only options of the command printing them.

Library errors spell a fix for both audiences, ``download=True (--download)``: the keyword of the
Python API, then the command-line option in parentheses. :func:`only_options` drops, from a one-line
message, every alternative (``..., or ...``) or clause (``...; ...``) whose parenthesised option the
command does not have, e.g. ``--download`` in ``eval`` (which reads the data the checkpoint names).
"""

from __future__ import annotations

import re
from collections.abc import Collection

__all__ = ["only_options"]

_OPTION = re.compile(r"\((--[a-z][a-z0-9-]*)\)")


def _fits(text: str, accepted: Collection[str]) -> bool:
    return all(flag in accepted for flag in _OPTION.findall(text))


def only_options(message: str, accepted: Collection[str]) -> str:
    """``message`` without the alternatives and clauses naming a ``(--option)`` not in ``accepted``
    (the option strings of the command); the rest of the message is kept as it is."""
    if not _OPTION.search(message):
        return message
    parts = []
    for part in message.split("; "):
        alternatives = [a for a in part.split(", or ") if _fits(a, accepted)]
        if alternatives:
            parts.append(", or ".join(alternatives))
    return "; ".join(parts) if parts else message
