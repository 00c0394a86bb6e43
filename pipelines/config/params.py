"""One typed config: params file sections loaded into frozen dataclasses.

Every stage CLI calls :func:`load_config` with ``--params FILE`` (repeatable: a later file
replaces whole sections) and repeated ``--set section.key=value``.  Nothing else changes a
value, so what DVC records of the files is what runs.  Unknown keys, missing required keys
and wrong types raise :class:`ConfigError` whose message names the file and key.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from datasets.specs import DatasetSpec
from pipelines.config.schema import Config

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A params file or override that cannot be turned into the typed config; an unknown key
    carries its dotted name and the keys valid in its place."""

    def __init__(self, message: str, key: str | None = None, valid: typing.Sequence[str] = ()) -> None:
        super().__init__(message)
        self.key, self.valid = key, list(valid)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader reading ``1e-4`` as a number, as YAML 1.2 (and so DVC) does.

    YAML 1.1 wants a dot in a float, so ``lr_d: 5e-05``, which DVC writes for ``dvc exp run -S
    optim.lr_d=0.00005``, would otherwise arrive as the string '5e-05' and the run be refused.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


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
        raise ConfigError(
            errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {_type_name(tp)}"
        )
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
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
        dotted, valid = f"{where}.{unknown[0]}" if where else unknown[0], sorted(fields)
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r} (valid keys: {', '.join(valid)})", key=dotted, valid=valid
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


def leaves(data: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as ``{"section.key": value}``, one entry per leaf (empty mappings count as leaves)."""
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(leaves(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


def apply_override(raw: dict, override: str) -> None:
    """Apply one ``section.key=value`` override to the raw params mapping in place."""
    if "=" not in override:
        raise ConfigError(f"--set {override!r}: expected section.key=value")
    dotted, text = override.split("=", 1)
    parts = [p for p in dotted.strip().split(".") if p]
    if len(parts) < 2:
        raise ConfigError(f"--set {override!r}: expected section.key=value")
    try:
        value = parse_yaml(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"--set {override!r}: value is not valid YAML ({getattr(exc, 'problem', exc)})"
        ) from exc
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {override!r}: {'.'.join(parts[: depth + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def read_params(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (pass --params FILE)")
    try:
        raw = parse_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return raw


def read_layers(paths: typing.Sequence[str | Path]) -> tuple[dict, dict[str, str]]:
    """The params files in order, a later file replacing each top-level section it has *whole*.

    Returns the merged mapping and, per top-level section, the file it came from.  Sections are
    never merged key by key: every value of a section is in the one file DVC reads it from (a
    pipeline's stages list each section under that file), so ``dvc params diff`` shows exactly
    what runs.
    """
    raw: dict = {}
    origin: dict[str, str] = {}
    for path in paths:
        for section, value in read_params(path).items():
            raw[section] = value
            origin[section] = str(path)
    return raw, origin


def load_config(
    paths: str | Path | typing.Sequence[str | Path] = "params.yaml", overrides: typing.Sequence[str] = ()
) -> Config:
    """Read the params file(s), apply ``overrides`` and return the typed, frozen :class:`Config`.

    ``paths`` is one file or several (:func:`read_layers`: a later file replaces whole sections).
    ``overrides`` are the command line's ``--set section.key=value``: each one trains at exactly
    the value given, and one naming a key the schema does not have is refused, naming the key.
    Nothing else changes a value: what the files say (and DVC records) is what runs.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    raw, origin = read_layers(paths)
    for override in overrides:
        apply_override(raw, override)
    try:
        return build_dataclass(Config, raw, "")
    except ConfigError as exc:
        files = " + ".join(map(str, paths))
        if exc.key is None:
            raise ConfigError(f"{files}: {exc}") from exc
        section = exc.key.split(".", 1)[0]
        asked = next(
            (o for o in overrides if (o.split("=", 1)[0].strip() + ".").startswith(exc.key + ".")), None
        )
        if asked is None:
            raise ConfigError(
                f"{origin.get(section, paths[-1])}: unknown key {exc.key!r} (valid there: "
                f"{', '.join(exc.valid)})",
                exc.key,
                exc.valid,
            ) from exc
        where = (
            f"section {section!r} is read from {origin[section]}"
            if "." in exc.key and section in origin
            else f"params {files}"
        )
        raise ConfigError(
            f"--set {asked!r}: unknown key {exc.key!r} ({where}; valid there: {', '.join(exc.valid)})",
            exc.key,
            exc.valid,
        ) from exc


def add_config_args(
    parser: argparse.ArgumentParser, default: typing.Sequence[str] = ("params.yaml",)
) -> None:
    parser.add_argument(
        "--params",
        action="append",
        default=None,
        metavar="FILE",
        help=f"params file (default: {' '.join(default)}); repeat to layer files, a later one replacing "
        "whole sections (e.g. --params params.yaml --params portrait/params.yaml)",
    )
    parser.set_defaults(params_default=list(default))
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one param, e.g. --set train.batch_size=4 (repeatable)",
    )
    parser.add_argument(
        "--dump-config", action="store_true", help="print the resolved config as JSON and exit"
    )


def config_from_args(args: argparse.Namespace):
    """Load the config named by the CLI args; on error log one line and exit 2."""
    args.params = args.params or list(getattr(args, "params_default", None) or ["params.yaml"])
    try:
        cfg = load_config(args.params, args.overrides)
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
