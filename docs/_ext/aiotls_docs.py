"""Sphinx directives that render aiotls's option table from the code, so the docs cannot drift.

``aiotls-options``    one table (name, type, default, what it does) for one options TypedDict
``aiotls-hooks``      the hook types of aiotls.options, with their ``#:`` comments
``aiotls-node-names`` every option beside its Node.js name (``Opt.node``, else camelCase)
``aiotls-verify-codes`` the certificate verification codes (OpenSSL's names, as Node's)
"""

import collections.abc
import importlib
import re
import types
import typing
from collections.abc import Iterable
from typing import Any

from docutils import nodes
from docutils.parsers.rst import Parser
from docutils.utils import new_document
from sphinx.application import Sphinx
from sphinx.pycode import ModuleAnalyzer
from sphinx.util.docutils import SphinxDirective

from aiotls import context, errors, options
from aiotls.context import Opt, option_specs

#: The hook types, by name: the names the tables show instead of the expanded Callable.
HOOK_TYPES = {
    name: getattr(options, name)
    for name in options.__all__
    if name.endswith(("Hook", "Callback", "Selector", "Identity")) and name != "Hook"
}


def _alias_name(tp: object) -> str | None:
    return next((name for name, value in HOOK_TYPES.items() if tp == value), None)


def type_text(tp: Any, *, expand: bool = False) -> str:
    """A type as a reader would write it: ``X | None``, ``Hook[[bytes], object]``, alias names."""
    if not expand and (name := _alias_name(tp)) is not None:
        return name
    if tp is None or tp is type(None):
        return "None"
    if isinstance(tp, typing.ForwardRef):
        return tp.__forward_arg__
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return type_text(args[0])
    if len(_members(tp)) > 1:
        pem = set(_members(context.Pem))
        named = ["Pem"] if pem <= set(args) else []  # key material: the alias, not its members
        hidden = (pem if named else set()) | {type(None)}
        parts = named + [type_text(a) for a in args if a not in hidden]
        return " | ".join(parts + ["None"] * (type(None) in args))
    if origin is typing.Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin is collections.abc.Callable:
        params, result = args
        if isinstance(params, list):
            call = f"[{', '.join(type_text(p) for p in params)}]"
        else:  # ... or a ParamSpec
            call = "..." if params is Ellipsis else type_text(params)
        if (awaited := _hook_result(result)) is not None:
            return f"Hook[{call}, {awaited}]"
        return f"Callable[{call}, {type_text(result)}]"
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else type_text(a) for a in args)
        return f"{origin.__name__}[{inner}]"
    return getattr(tp, "__name__", repr(tp))


def _members(tp: Any) -> tuple[Any, ...]:
    """The members of a union, or the type itself."""
    is_union = typing.get_origin(tp) in (typing.Union, types.UnionType)
    return typing.get_args(tp) if is_union else (tp,)


def _hook_result(result: Any) -> str | None:
    """R when ``result`` is ``R | Awaitable[R]`` (how a Hook's result reads), else None."""
    members = _members(result)
    awaitables = [m for m in members if typing.get_origin(m) is collections.abc.Awaitable]
    if len(awaitables) != 1:
        return None
    (inner,) = typing.get_args(awaitables[0])
    rest = {m for m in members if m is not awaitables[0]}
    return type_text(inner) if rest == set(_members(inner)) else None


def _type_cell(text: str) -> str:
    """A type's text as reST: hook type names link to their entries, the rest is literal."""
    parts = re.split(r"\b(" + "|".join(HOOK_TYPES) + r")\b", text)
    cells = [
        f":py:data:`~aiotls.options.{part}`" if odd else f"``{part.strip()}``"
        for odd, part in ((i % 2 == 1, p) for i, p in enumerate(parts))
        if part.strip()
    ]
    return " ".join(cells)


def _import(dotted: str) -> Any:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class _RstDirective(SphinxDirective):
    """A directive that writes reStructuredText, parsed as such even on a Markdown page
    (where the state's own nested_parse would read it as Markdown), as MyST's eval-rst."""

    def rst(self) -> Iterable[str]:
        raise NotImplementedError

    def run(self) -> list[nodes.Node]:
        document = self.state.document
        subdocument = new_document(document["source"], document.settings)
        subdocument.reporter = document.reporter
        Parser().parse("\n".join(self.rst()) + "\n", subdocument)
        return list(subdocument.children)


def _list_table(header: list[str], rows: Iterable[list[str]], widths: str) -> list[str]:
    out = [".. list-table::", "   :header-rows: 1", f"   :widths: {widths}", ""]
    for row in [header, *rows]:
        out.append(f"   * - {row[0]}")
        out += [f"     - {cell}" for cell in row[1:]]
    return out


def _escape(text: str) -> str:
    """Option docs are plain text: keep * and | from being read as markup."""
    return re.sub(r"([*|_`\\])", r"\\\1", text)


def _default(opt: Opt) -> str:
    return "" if opt.default is None else f"``{opt.default!r}``"


class OptionsTable(_RstDirective):
    """``.. aiotls-options:: aiotls.context.ContextOptions``: one row per option."""

    required_arguments = 1

    def rst(self) -> Iterable[str]:
        table = _import(self.arguments[0])
        rows = []
        for name, opt in option_specs(table).items():
            kind = _type_cell(type_text(table.__annotations__[name]))
            rows.append([f"``{name}``", kind, _default(opt), _escape(opt.doc)])
        return _list_table(["Option", "Type", "Default", "What it does"], rows, "18 30 10 42")


class HookTypes(_RstDirective):
    """``.. aiotls-hooks::``: each hook type of aiotls.options with its ``#:`` comment."""

    def rst(self) -> Iterable[str]:
        docs = ModuleAnalyzer.for_module("aiotls.options").find_attr_docs()
        for name, value in HOOK_TYPES.items():
            comment = [line for line in docs.get(("", name), []) if line]
            yield f".. py:data:: {name}"
            yield "   :module: aiotls.options"
            yield f"   :type: {type_text(value, expand=True)}"
            yield ""
            yield from (f"   {line}" for line in comment)
            yield ""


class NodeNames(_RstDirective):
    """``.. aiotls-node-names::``: every option with the Node.js name it comes from."""

    TABLES: typing.ClassVar[list[tuple[str, str]]] = [
        ("context", "aiotls.context.ContextOptions"),
        ("both sides", "aiotls.options._BothSides"),
        ("server", "aiotls.options._ServerSide"),
        ("client", "aiotls.options._ClientSide"),
    ]

    def rst(self) -> Iterable[str]:
        rows = []
        for where, dotted in self.TABLES:
            for name, opt in option_specs(_import(dotted)).items():
                node = _camel(name) if opt.node is None else opt.node
                rows.append([f"``{name}``", f"``{node}``" if node else "(none)", where])
        return _list_table(["aiotls", "Node.js", "where"], rows, "35 40 25")


class VerifyCodes(_RstDirective):
    """``.. aiotls-verify-codes::``: the X509_V_ERR names a certificate error may carry."""

    def rst(self) -> Iterable[str]:
        rows = [[str(n), f"``{name}``"] for n, name in errors._VERIFY_NAMES.items()]
        return _list_table(["X509_V_ERR", "code"], rows, "20 80")


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("aiotls-options", OptionsTable)
    app.add_directive("aiotls-hooks", HookTypes)
    app.add_directive("aiotls-node-names", NodeNames)
    app.add_directive("aiotls-verify-codes", VerifyCodes)
    return {"parallel_read_safe": True, "version": "1"}
