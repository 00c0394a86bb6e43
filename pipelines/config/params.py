"""One typed config: params.yaml sections loaded into frozen dataclasses.

Every stage CLI calls :func:`load_config` with ``--params FILE`` and repeated
``--set section.key=value`` overrides.  Unknown keys, missing required keys and
wrong types raise :class:`ConfigError` whose message names the file and key.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from datasets.specs import DatasetSpec
from pipelines.config.schema import Config

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A params file or override that cannot be turned into the typed config."""


_MISSING = object()


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; build nested dataclasses."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return build_dataclass(tp, value, where)
    if origin in (dict,):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        key_t, val_t = args or (str, Any)
        return {_coerce(k, key_t, f"{where}"): _coerce(v, val_t, f"{where}.{k}") for k, v in value.items()}
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item_t = args[0] if args else Any
        items = [_coerce(v, item_t, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return value


def build_dataclass(cls: type, data: dict, where: str) -> Any:
    """Build the frozen dataclass ``cls`` from ``data``; reject unknown and missing keys."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r} (valid keys: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, field in fields.items():
        key = f"{where}.{name}" if where else name
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: required key is missing")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def to_dict(obj: Any) -> Any:
    """The config as plain JSON-able data (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def apply_override(raw: dict, override: str) -> None:
    """Apply one ``section.key=value`` override to the raw params mapping in place."""
    if "=" not in override:
        raise ConfigError(f"--set {override!r}: expected section.key=value")
    dotted, text = override.split("=", 1)
    parts = [p for p in dotted.strip().split(".") if p]
    if len(parts) < 2:
        raise ConfigError(f"--set {override!r}: expected section.key=value")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {override!r}: value is not valid YAML ({exc.problem})") from exc
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {override!r}: {'.'.join(parts[:depth + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def read_params(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (pass --params FILE)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return raw


def dataset_overrides(raw: dict, dataset: str | None) -> list[str]:
    """``datasets.<dataset>.overrides`` of a raw params mapping (``dataset`` None: ``train.dataset``)."""
    if dataset is None:
        train = raw.get("train")
        dataset = train.get("dataset") if isinstance(train, dict) else None
    entry = (raw.get("datasets") or {}).get(dataset) if isinstance(raw.get("datasets"), dict) else None
    items = entry.get("overrides") if isinstance(entry, dict) else None
    if not items:
        return []
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ConfigError(f"datasets.{dataset}.overrides: expected a list of 'section.key=value' strings")
    bad = [i for i in items if i.split("=", 1)[0].strip().startswith("datasets.")]
    if bad:
        raise ConfigError(f"datasets.{dataset}.overrides: {bad[0]!r} may not change the datasets section")
    return list(items)


_UNSET = object()


def schema_default(dotted: str) -> Any:
    """The built-in default of a dotted params key (``_UNSET`` where the schema has none)."""
    cls: Any = Config
    parts = dotted.split(".")
    for depth, name in enumerate(parts):
        if not dataclasses.is_dataclass(cls):
            return _UNSET
        found = {f.name: f for f in dataclasses.fields(cls)}.get(name)
        if found is None:
            return _UNSET
        if found.default is not dataclasses.MISSING:
            value = found.default
        elif found.default_factory is not dataclasses.MISSING:
            value = found.default_factory()
        else:
            return _UNSET
        if depth == len(parts) - 1:
            return to_dict(value)
        cls = value
    return _UNSET


def _lookup(raw: dict, dotted: str) -> Any:
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _UNSET
        node = node[part]
    return node


def user_value_wins(raw: dict, override: str, dataset: str | None) -> bool:
    """Whether params.yaml's own value of an override's key beats the dataset's override.

    A dataset's overrides are its recipe *over the built-in defaults*: where params.yaml sets the
    key to something else (by hand, or ``dvc exp run -S optim.lr_g=...``), that is a user's choice,
    and an override silently replacing it would make DVC record an experiment whose parameter never
    took effect.  So the user's value wins, and the log names both values.
    """
    dotted, text = override.split("=", 1)
    dotted = dotted.strip()
    user, default = _lookup(raw, dotted), schema_default(dotted)
    if user is _UNSET or default is _UNSET:
        return False
    recipe = yaml.safe_load(text) if text.strip() else ""
    if to_dict(user) == recipe:
        return False
    if to_dict(user) == default:
        # params.yaml holds the built-in default here, so the recipe applies; said in the log, since
        # a value set to exactly the default (by hand or `dvc exp run -S`) cannot be told apart.
        log.debug("datasets.%s.overrides sets %s=%r over params.yaml's %r (the built-in default)",
                 dataset, dotted, recipe, user)
        return False
    log.warning("%s=%r (params.yaml, not the default %r) wins over datasets.%s.overrides %s=%r",
                dotted, user, default, dataset, dotted, recipe)
    return True


def load_config(path: str | Path = "params.yaml", overrides: typing.Sequence[str] = (),
                dataset: str | None = None) -> Config:
    """Read ``path``, apply overrides, and return the typed, frozen :class:`Config`.

    The overrides of the dataset a stage runs on (``datasets.<dataset>.overrides``; ``dataset``
    None: ``train.dataset``) are applied first, then ``overrides`` (the command line's ``--set``),
    so a per-dataset setting such as portraits' ``model.pose_channels=8`` is the default for that
    dataset and the command line still wins.  An override never replaces a value params.yaml sets
    away from the built-in default (:func:`user_value_wins`), so ``dvc exp run -S`` always takes
    effect.  The result is the resolved config stages record.
    """
    raw = read_params(path)
    for override in overrides:
        apply_override(raw, override)
    extra = dataset_overrides(raw, dataset)
    if extra:
        raw = read_params(path)
        name = dataset or (raw.get("train") or {}).get("dataset")
        extra = [o for o in extra if not user_value_wins(raw, o, name)]
        for override in [*extra, *overrides]:
            apply_override(raw, override)
    try:
        return build_dataclass(Config, raw, "")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one param, e.g. --set train.batch_size=4 (repeatable)",
    )
    parser.add_argument("--dump-config", action="store_true", help="print the resolved config as JSON and exit")


def config_from_args(args: argparse.Namespace):
    """Load the config named by the CLI args; on error log one line and exit 2."""
    try:
        cfg = load_config(args.params, args.overrides, getattr(args, "dataset", None))
    except ConfigError as exc:
        log.error("config: %s", exc)
        raise SystemExit(2) from None
    if getattr(args, "dump_config", False):
        print(json.dumps(to_dict(cfg), indent=2, sort_keys=True))
        raise SystemExit(0)
    return cfg


def dataset_from_args(cfg: Config, name: str) -> DatasetSpec:
    """The params.yaml entry of dataset ``name``; on an unknown name log one line and exit 2."""
    try:
        return cfg.dataset(name)
    except KeyError as exc:
        log.error("config: %s", exc.args[0])
        raise SystemExit(2) from None
