"""MkDocs hook: turn the Sphinx roles of the docstrings into links in the API reference.

The library's docstrings say ``:class:`RetryPolicy```, which reads well in ``help()``, while
mkdocstrings renders Markdown and would print the role as text. After a page is rendered, each
role becomes a link to the object's entry on the page (``suno_persona.X``, else
``suno_persona.testing.X``, else the one entry whose name ends with ``.X``), or plain code
when there is no such entry.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|exc|func|meth|attr|data|mod|obj):<code>(~?)([\w.]+)</code>")
_ANCHOR = re.compile(r'\bid="(suno_persona[\w.]*)"')


def on_page_content(html: str, **_kwargs: Any) -> str:
    """Replace every ``:role:`name``` left in the rendered page by a link or plain code."""
    anchors = set(_ANCHOR.findall(html))

    def resolve(target: str) -> str | None:
        for candidate in (target, f"suno_persona.{target}", f"suno_persona.testing.{target}"):
            if candidate in anchors:
                return candidate
        endings = [anchor for anchor in anchors if anchor.endswith(f".{target}")]
        return endings[0] if len(endings) == 1 else None

    def replace(match: re.Match[str]) -> str:
        short, target = match.group(1), match.group(2)
        title = f"<code>{target.rsplit('.', 1)[-1] if short else target}</code>"
        anchor = resolve(target)
        if anchor is None:
            return title
        return f'<a class="autorefs autorefs-internal" href="#{anchor}">{title}</a>'

    return _ROLE.sub(replace, html)
