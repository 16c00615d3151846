"""YAML -> typed dataclasses, with dotted command-line overrides and a list of unused keys.

Keys that no dataclass field takes (the reference's `profiling`, `probe_freq`, ...) are
collected as dotted names and logged once as a warning: a published config must load
unchanged, and a typo must still be visible. Values are converted by the field's type hint
and checked by the dataclass; any failure is a `ConfigError` naming the dotted key.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from aunet.config.errors import ConfigError
from aunet.config.train import TrainArgs

logger = logging.getLogger(__name__)

T = TypeVar("T")


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> tuple[TrainArgs, list[str]]:
    """Read a YAML config, apply ``key.sub=value`` overrides, and build `TrainArgs`.

    Returns the arguments and the dotted names of the keys nothing used (also logged).

    >>> args, unused = load_config("configs/aunet2_1b.yaml", ["optim.lr=1e-3"])  # doctest: +SKIP
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(str(path), f"cannot read: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(str(path), f"invalid YAML: {e}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(str(path), f"the top level must be a mapping, got {type(raw).__name__}")
    return config_from_dict(raw, overrides, source=str(path))


def config_from_dict(raw: Mapping[str, Any], overrides: Iterable[str] = (), source: str = "config"
                     ) -> tuple[TrainArgs, list[str]]:
    """`load_config` for an already-parsed mapping."""
    raw = apply_overrides(raw, overrides)
    unused: list[str] = []
    args = build(TrainArgs, raw, "", unused)
    if unused:
        logger.warning("%s: unused keys (accepted, ignored): %s", source, ", ".join(unused))
    return args, unused


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of `raw` with each ``a.b.c=value`` set; the value is parsed as YAML
    (``3``, ``1e-3``, ``true``, ``null``, ``[1, 2]``, ``{word1: 1@1}``)."""
    out = copy.deepcopy(dict(raw))
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(item, "an override must look like key.sub=value")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(key, f"cannot parse override value {text!r}: {e}") from None
        node = out
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(".".join(parts[: depth + 1]), f"is a value, not a section: cannot set {key}")
            node = child
        node[parts[-1]] = value
    return out


def to_dict(args: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (what checkpoints and exports store as YAML)."""
    return dataclasses.asdict(args)


def build(cls: type[T], raw: Any, section: str, unused: list[str]) -> T:
    """Instantiate dataclass `cls` from mapping `raw`; `section` is its dotted name."""
    if not isinstance(raw, Mapping):
        raise ConfigError(section, f"expected a mapping, got {_show(raw)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in raw.items():
        dotted = f"{section}.{key}" if section else str(key)
        if key not in names:
            unused.append(dotted)
            continue
        kwargs[key] = convert(hints[key], value, dotted, unused)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise e.under(section) from None


def convert(tp: Any, value: Any, key: str, unused: list[str]) -> Any:
    """Convert a YAML value to type hint `tp`, or raise a ConfigError naming `key`."""
    origin, targs = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in targs:
            return None
        (inner,) = [a for a in targs if a is not type(None)]
        return convert(inner, value, key, unused)
    if dataclasses.is_dataclass(tp):
        return build(tp, {} if value is None else value, key, unused)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected a list, got {_show(value)}")
        return [convert(targs[0], v, f"{key}[{i}]", unused) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"expected a mapping, got {_show(value)}")
        return {str(k): convert(targs[1], v, f"{key}.{k}", unused) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, f"expected true or false, got {_show(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(key, f"expected an integer, got {_show(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # PyYAML reads 1e-3 (no dot) as a string.
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(key, f"expected a number, got {_show(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(key, f"expected a string, got {_show(value)}")
    if tp is Any:
        return value
    raise TypeError(f"{key}: unsupported config type {tp!r}")


def _show(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"
