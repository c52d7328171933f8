r"""MkDocs hook (``hooks:`` in mkdocs.yml): the docstrings' Sphinx roles (``:class:`X```, ``:func:`X```,
``:data:``, ``:meth:``, ``:mod:``, ``:attr:``) shown as plain code on the API pages (a leading ``~``
keeps only the last dotted part, as Sphinx does); a pipe escaped inside code in a Markdown table
(``\|``, which GitHub shows as ``|``) shown as ``|``."""

from __future__ import annotations

import re
from typing import Any

_ESCAPED_PIPE = re.compile(r"<code>[^<]*\\\|[^<]*</code>")
_ROLE = re.compile(r":(?:class|func|data|meth|mod|attr|exc|obj):<code>(~?)([^<]+)</code>")


def _code(m: re.Match) -> str:
    name = m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2)
    return f"<code>{name}</code>"


def on_page_content(html: str, **kwargs: Any) -> str:
    """The page's HTML with the roles' markers and the pipes' escapes dropped."""
    html = _ESCAPED_PIPE.sub(lambda m: m.group(0).replace("\\|", "|"), html)
    return _ROLE.sub(_code, html)
