"""Building a run's configuration: YAML files, presets and ``--set`` overrides in, one validated
:class:`~seq2seq.config.run.RunConfig` out (or one :class:`ConfigError` naming the file, line or key)."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from seq2seq.config.errors import ConfigError, short_repr
from seq2seq.config.presets import PRESETS, preset_model_config
from seq2seq.config.run import RunConfig


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _yaml_problem(error: Exception) -> str:
    """The one-line gist of a YAML error (PyYAML's own message spans several lines)."""
    if isinstance(error, RecursionError):
        return "nested too deeply"
    return getattr(error, "problem", None) or str(error).split("\n", 1)[0]


def _parse_override(item: str) -> tuple[list[str], Any]:
    shown = short_repr(item)
    if "=" not in item:
        raise ConfigError(f"--set {shown}: expected key.sub=value, e.g. train.epochs=5")
    key, raw = item.split("=", 1)
    path = [part for part in key.strip().split(".") if part]
    if not path:
        raise ConfigError(f"--set {shown}: empty key")
    if not raw.strip():
        return path, ""
    # YAML gives the natural types: 5 -> int, 1e-3 -> float, true -> bool, null -> None.
    try:
        return path, yaml.safe_load(raw)
    except (yaml.YAMLError, ValueError, RecursionError) as error:  # ValueError: an int over 4300 digits
        raise ConfigError(
            f"--set {shown}: the value of {short_repr(key.strip())} is not valid YAML ({_yaml_problem(error)}): expected a number, "
            "true/false, null, a [list], a {mapping} or a string (quote a string that starts with @, `, [ or {)"
        ) from None


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings to a nested dict (validation happens afterwards)."""
    tree = deep_merge({}, tree)
    for item in overrides:
        path, value = _parse_override(item)
        node = tree
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {short_repr(item)}: {short_repr(part)} is a value, not a section")
            node = child
        node[path[-1]] = value
    return tree


def _format_errors(error: ValidationError, source: str) -> str:
    """One line per problem, naming the key and what was expected; a single problem is one line in all.

    pydantic's "Value error, " prefix is dropped (the message is the validator's own), and so is
    the value when it is a whole section (a section-level check names its keys in the message)."""
    problems = []
    for item in error.errors():
        loc = [str(part) for part in item["loc"]]
        key = ".".join(loc) or "(root)"
        if item["type"] == "extra_forbidden":
            valid = _valid_keys(loc[:-1])
            hint = difflib.get_close_matches(loc[-1], valid, n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            problems.append(f"unknown key {short_repr(key)}{suggestion}; valid keys here: {', '.join(valid)}")
            continue
        message = item["msg"].removeprefix("Value error, ")
        value = item.get("input")
        got = "" if isinstance(value, dict | list) else f" (got {short_repr(value)})"
        problems.append(f"{message}{got}" if message.startswith(key) else f"{key}: {message}{got}")
    if len(problems) == 1:
        return f"{source}: {problems[0]}"
    return "\n".join([f"{source}: invalid configuration", *(f"  {problem}" for problem in problems)])


def _valid_keys(section: list[str]) -> list[str]:
    model: type[BaseModel] = RunConfig
    for part in section:
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None) if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def build_config(
    *,
    base: dict[str, Any] | None = None,
    preset: str | None = None,
    overrides: list[str] | None = None,
    source: str = "config",
) -> RunConfig:
    """Resolve a run configuration: defaults <- preset <- file contents and ``--set`` overrides."""
    if base is not None and not isinstance(base, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(base).__name__}")
    tree = apply_overrides(dict(base or {}), overrides or [])
    model = tree.get("model") or {}
    if not isinstance(model, dict):
        raise ConfigError(f"{source}: 'model' must be a section (a mapping), got {short_repr(model)}")
    preset = preset or model.get("preset")
    if preset is not None and not isinstance(preset, str):
        raise ConfigError(f"{source}: model.preset is {short_repr(preset)}: expected one of {', '.join(PRESETS)}")
    if preset:
        try:
            preset_tree = preset_model_config(preset)
        except ConfigError as error:
            raise ConfigError(f"{source}: model.preset: {error}") from None
        # Values given explicitly (file or --set) win over the preset's.
        tree["model"] = deep_merge(preset_tree, {k: v for k, v in model.items() if k != "preset"})
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as error:
        raise ConfigError(_format_errors(error, source)) from None


def _read_config_text(path: Path) -> str:
    """The file as UTF-8 text; a folder, an unreadable file or undecodable bytes name the file (and line)."""
    if path.is_dir():
        raise ConfigError(f"{path}: expected a YAML config file, found a folder")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config file ({error.strerror or error})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ConfigError(f"{path}:{line}: invalid UTF-8 (byte 0x{data[error.start]:02x}): expected UTF-8 text") from None


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML config file into a dict, with a clear error for a missing or malformed file."""
    text = _read_config_text(path)
    try:
        tree = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError) as error:  # ValueError: an int over 4300 digits
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: malformed YAML: {_yaml_problem(error)}") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (data, model, train, ...) at the top level")
    return tree


def config_to_yaml(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def save_config(config: RunConfig, path: Path) -> None:
    path.write_text(config_to_yaml(config), encoding="utf-8")
