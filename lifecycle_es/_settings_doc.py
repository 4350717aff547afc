"""A config dataclass's settings, listed in its docstring so that `help()` shows them.

Each field of a config class carries its description as an attribute docstring (the string
right under it), which Python keeps nowhere at run time. `document_settings` reads them from
the class's source with `ast` when the class is defined and appends them, with each field's
default, to the class docstring: the list cannot drift from the fields.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import textwrap
from typing import Any, TypeVar

__all__ = ["document_settings", "field_docstrings"]

T = TypeVar("T")


def field_docstrings(cls: type) -> dict[str, str]:
    """Return the attribute docstring of each annotated field of `cls`, by name, from its source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = next(node for node in tree.body if isinstance(node, ast.ClassDef)).body
    docs = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def document_settings(cls: type[T]) -> type[T]:
    """Append a "Settings" section to dataclass `cls`'s docstring: name, default and description.

    Apply it above `@dataclass`. Without the source (a build that ships no .py files) the
    docstring is left as it is.
    """
    try:
        docs = field_docstrings(cls)
    except (OSError, TypeError):  # no source to read: help() shows the field names only
        return cls
    lines = [inspect.cleandoc(cls.__doc__ or ""), "", "Settings (keyword-only; name = default):", ""]
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]  # a dataclass, as documented
        lines.append(f"{field.name} = {_default(field)}")
        lines += [f"    {line}" if line else "" for line in docs.get(field.name, "").splitlines()]
    cls.__doc__ = "\n".join(lines).strip() + "\n"
    return cls


def _default(field: dataclasses.Field[Any]) -> str:
    if field.default is not dataclasses.MISSING:
        return repr(field.default)
    if field.default_factory is not dataclasses.MISSING:
        return f"{getattr(field.default_factory, '__name__', 'factory')}()"
    return "(required)"
