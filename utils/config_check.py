"""Checks a composed config before anything is built: every key must be an argument of its `_target_`, and
a value of a plain type (int, float, bool, str, list) must be what the argument's annotation says."""

from __future__ import annotations

import difflib
import inspect
import types
import typing

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf


def _arguments(target: str) -> set[str] | None:
    """Names `target` accepts as keywords, or None when it takes **kwargs."""
    obj = get_object(target)
    params = inspect.signature(obj).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


#: Config value types each plain annotation accepts (an int is a valid float, a list a valid tuple).
_ACCEPTS = {int: (int,), float: (int, float), bool: (bool,), str: (str,), type(None): (type(None),),
            list: (list,), tuple: (list,)}


def _plain_types(target: str) -> dict[str, tuple[type, ...]]:
    """{argument: config value types it accepts} for the arguments of `target` annotated with plain types
    (unions of int, float, bool, str, None, list and tuple); others are left unchecked."""
    obj = get_object(target)
    try:
        hints = typing.get_type_hints(obj.__init__ if inspect.isclass(obj) else obj)
    except Exception:  # annotations that cannot be resolved here are not checked
        return {}
    plain = {}
    for name, hint in hints.items():
        options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        options = [typing.get_origin(o) or o for o in options]
        if all(o in _ACCEPTS for o in options):
            plain[name] = tuple({t for o in options for t in _ACCEPTS[o]})
    return plain


def _type_error(where: str, value, accepted: tuple[type, ...]) -> ValueError | None:
    if isinstance(value, str) and "${" in value:  # an interpolation, resolved later
        return None
    if isinstance(value, bool) and bool not in accepted and int in accepted:
        return ValueError(f"config key '{where}': expected {_names(accepted)}, got {value!r}")
    if isinstance(value, accepted):
        return None
    return ValueError(f"config key '{where}': expected {_names(accepted)}, got {value!r} ({type(value).__name__})")


def _names(accepted: tuple[type, ...]) -> str:
    order = [int, float, bool, str, list, type(None)]
    return " or ".join("null" if t is type(None) else t.__name__ for t in sorted(accepted, key=order.index))


def check_config(cfg: DictConfig) -> None:
    """Raise ValueError for the first key that its node's `_target_` does not accept, naming the key's
    full path and the closest valid name, or whose plain value is not of the annotated type."""

    def visit(node, path: str) -> None:
        if isinstance(node, dict):
            target = node.get("_target_")
            allowed = _arguments(target) if isinstance(target, str) else None
            plain = _plain_types(target) if isinstance(target, str) else {}
            for key, value in node.items():
                where = f"{path}.{key}" if path else str(key)
                special = isinstance(key, str) and key.startswith("_") and key.endswith("_")
                if allowed is not None and not special and key not in allowed:
                    close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
                    hint = f"; did you mean '{close[0]}'?" if close else ""
                    raise ValueError(f"config key '{where}' is not an argument of {target}{hint}")
                if key in plain and (error := _type_error(where, value, plain[key])):
                    raise error
                visit(value, where)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                visit(value, f"{path}[{i}]")

    visit(OmegaConf.to_container(cfg, resolve=False), "")
