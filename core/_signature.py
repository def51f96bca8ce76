"""Factory signatures: read from source without importing (for ``info``), checked before a call."""
from __future__ import annotations

import ast
import importlib.util
import inspect
import sys
from typing import Any, Callable, Mapping, Optional, Tuple

from ._errors import ComponentArgumentError, did_you_mean


def _find_definition(tree: ast.Module, attr: str) -> Optional[ast.AST]:
    node: Optional[ast.AST] = None
    scope: list[ast.stmt] = list(tree.body)
    for part in attr.split("."):
        node = next((n for n in scope if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                     and n.name == part), None)
        if node is None:
            return None
        scope = list(getattr(node, "body", []))
    return node


def _strip_first(args: ast.arguments) -> ast.arguments:
    """Drop ``self`` from an ``__init__`` signature."""
    if args.posonlyargs:
        return ast.arguments(args.posonlyargs[1:], args.args, args.vararg, args.kwonlyargs,
                             args.kw_defaults, args.kwarg, args.defaults)
    return ast.arguments([], args.args[1:], args.vararg, args.kwonlyargs, args.kw_defaults,
                         args.kwarg, args.defaults)


def static_signature(target: str) -> Tuple[str, str]:
    """``(signature, docstring)`` of a ``module:attr`` target, read from its source, importing nothing heavy.

    Only the target's parent packages are imported (as ``find_spec`` must); plugin packages keep those
    light. Falls back to ``"(...)"`` where the target is not a plain def or class.
    """
    module, _, attr = target.partition(":")
    loaded = sys.modules.get(module)
    if loaded is not None:
        try:
            return live_signature(_getattr_path(loaded, attr))
        except AttributeError:
            pass
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return "(...)", ""
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return "(...)", ""
    try:
        with open(spec.origin, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
    except (OSError, SyntaxError, UnicodeDecodeError):
        return "(...)", ""
    node = _find_definition(tree, attr)
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return "(" + ast.unparse(node.args) + ")", ast.get_docstring(node) or ""
    if isinstance(node, ast.ClassDef):
        init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
        text = "(" + ast.unparse(_strip_first(init.args)) + ")" if init is not None else "(...)"
        return text, ast.get_docstring(node) or ""
    return "(...)", ""


def _getattr_path(obj: Any, attr: str) -> Any:
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def live_signature(obj: Callable[..., Any]) -> Tuple[str, str]:
    """``(signature, docstring)`` of an imported object."""
    try:
        try:
            text = str(inspect.signature(obj, eval_str=True))
        except NameError:  # an annotation that cannot be evaluated here
            text = str(inspect.signature(obj))
    except (TypeError, ValueError):
        text = "(...)"
    return text, inspect.getdoc(obj) or ""


def check_arguments(factory: Callable[..., Any], kwargs: Mapping[str, Any], what: str) -> None:
    """Name unknown or missing keyword arguments before the call, with close matches and the accepted list."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    params = sig.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        accepted = None
    else:
        accepted = [p.name for p in params
                    if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    if accepted is not None:
        unknown = [key for key in kwargs if key not in accepted]
        if unknown:
            parts = [f"'{key}'{did_you_mean(key, accepted)}" for key in unknown]
            raise ComponentArgumentError(
                f"{what} does not take the argument{'s' if len(unknown) > 1 else ''} {', '.join(parts)}. "
                f"Accepted arguments: {', '.join(accepted) or '(none)'}.")
    try:
        sig.bind(**kwargs)
    except TypeError as exc:
        raise ComponentArgumentError(f"{what}: {exc}. Signature: {sig}") from None
