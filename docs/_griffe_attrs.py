"""Griffe extension: give attrs classes the constructor signature attrs generates.

Griffe reads the source, where an ``@attrs.frozen`` class has no ``__init__``, so the API
reference would show no signature and no defaults for ``PersonaRequest``, ``RetryPolicy``,
the events... This adds an ``__init__`` built from the runtime signature; with
``merge_init_into_class`` it shows as the class's signature. Not a page (see mkdocs.yml).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import attrs
import griffe

_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: griffe.ParameterKind.positional_only,
    inspect.Parameter.POSITIONAL_OR_KEYWORD: griffe.ParameterKind.positional_or_keyword,
    inspect.Parameter.VAR_POSITIONAL: griffe.ParameterKind.var_positional,
    inspect.Parameter.KEYWORD_ONLY: griffe.ParameterKind.keyword_only,
    inspect.Parameter.VAR_KEYWORD: griffe.ParameterKind.var_keyword,
}


class AttrsSignatures(griffe.Extension):
    """Adds the attrs-generated ``__init__`` to each attrs class of the package."""

    def on_class_members(self, *, cls: griffe.Class, **_kwargs: Any) -> None:
        if "__init__" in cls.members:
            return
        module = importlib.import_module(cls.module.path)
        runtime = getattr(module, cls.name, None)
        if runtime is None or not attrs.has(runtime):
            return
        parameters = [
            griffe.Parameter(
                name,
                annotation=_annotation(parameter.annotation),
                kind=_KINDS[parameter.kind],
                default=None if parameter.default is parameter.empty else repr(parameter.default),
            )
            for name, parameter in inspect.signature(runtime).parameters.items()
        ]
        init = griffe.Function(
            "__init__", parameters=griffe.Parameters(*parameters), returns="None", parent=cls
        )
        cls.set_member("__init__", init)


def _annotation(value: object) -> str | None:
    if value is inspect.Parameter.empty:
        return None
    return value if isinstance(value, str) else inspect.formatannotation(value)
