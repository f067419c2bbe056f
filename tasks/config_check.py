"""Checks a composed config before anything is built: every key must be an argument of its `_target_`."""

from __future__ import annotations

import difflib
import inspect

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf


def _arguments(target: str) -> set[str] | None:
    """Names `target` accepts as keywords, or None when it takes **kwargs."""
    obj = get_object(target)
    params = inspect.signature(obj).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


def check_config(cfg: DictConfig) -> None:
    """Raise ValueError for the first key that its node's `_target_` does not accept, naming the key's
    full path and the closest valid name."""

    def visit(node, path: str) -> None:
        if isinstance(node, dict):
            target = node.get("_target_")
            allowed = _arguments(target) if isinstance(target, str) else None
            for key, value in node.items():
                where = f"{path}.{key}" if path else str(key)
                special = isinstance(key, str) and key.startswith("_") and key.endswith("_")
                if allowed is not None and not special and key not in allowed:
                    close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
                    hint = f"; did you mean '{close[0]}'?" if close else ""
                    raise ValueError(f"config key '{where}' is not an argument of {target}{hint}")
                visit(value, where)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                visit(value, f"{path}[{i}]")

    visit(OmegaConf.to_container(cfg, resolve=False), "")
