"""Typed reads of environment variables; every error names the variable at fault."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from dataclasses import field as dataclass_field
from typing import Any, TypeVar

N = TypeVar("N", int, float)
T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing or malformed. The message names the variable."""

    def __init__(self, variable: str, reason: str) -> None:
        super().__init__(f"{variable}: {reason}")
        self.variable = variable
        self.reason = reason


class Env:
    """Reads settings from a mapping (os.environ by default) with bounds and clear errors."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def string(self, name: str, default: str) -> str:
        value = self.raw(name)
        return default if value is None else value

    def optional_str(self, name: str) -> str | None:
        return self.raw(name)

    def required_str(self, name: str) -> str:
        value = self.raw(name)
        if value is None:
            raise ConfigError(name, "is required but not set")
        return value

    def integer(
        self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            parsed = int(value)
        except ValueError:
            raise ConfigError(name, f"must be an integer, got {value!r}") from None
        return _bounded(name, parsed, minimum, maximum)

    def optional_int(self, name: str, *, minimum: int | None = None) -> int | None:
        value = self.raw(name)
        if value is None or value.lower() in {"none", "unlimited"}:
            return None
        return self.integer(name, 0, minimum=minimum)

    def number(
        self,
        name: str,
        default: float,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            parsed = float(value)
        except ValueError:
            raise ConfigError(name, f"must be a number, got {value!r}") from None
        if parsed != parsed:  # NaN
            raise ConfigError(name, "must be a number, got NaN")
        return _bounded(name, parsed, minimum, maximum)

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(name, f"must be a boolean (1/0, true/false), got {value!r}")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.string(name, default)
        if value not in choices:
            raise ConfigError(name, f"must be one of {', '.join(choices)}, got {value!r}")
        return value


def _bounded(name: str, value: N, minimum: N | None, maximum: N | None) -> N:
    if minimum is not None and value < minimum:
        raise ConfigError(name, f"must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(name, f"must be at most {maximum}, got {value}")
    return value


# -- settings declared on dataclass fields ---------------------------------------------------
#
# A frozen dataclass whose fields are declared with `env_field(...)` is read from the
# environment by `load_fields`; `describe_fields` lists the variables for documentation.
# Kinds: "str", "int", "float", "seconds_ms" (seconds in the environment, milliseconds in the
# field), "flag", "choice", "optional_int" (none/unlimited -> None), "name_map_int"
# (`name=3,other=none`), "name_map_seconds_ms" (`name=600,other=30` seconds -> ms).

_SETTING = "limbo.setting"


@dataclass(frozen=True)
class EnvSetting:
    variable: str
    kind: str
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    shown_default: str | None = None  # how the default reads in the documentation


def env_field(
    variable: str,
    default: Any,
    kind: str,
    doc: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple[str, ...] = (),
    shown_default: str | None = None,
) -> Any:
    meta = EnvSetting(variable, kind, doc, minimum, maximum, choices, shown_default)
    if isinstance(default, dict):
        frozen = dict(default)
        return dataclass_field(default_factory=lambda: dict(frozen), metadata={_SETTING: meta})
    return dataclass_field(default=default, metadata={_SETTING: meta})


def settings_of(cls: type) -> list[tuple[str, EnvSetting, Any]]:
    """(field name, setting, default) of every env-declared field of a dataclass type."""
    declared = []
    for f in fields(cls):
        meta = f.metadata.get(_SETTING)
        if meta is not None:
            if f.default is not MISSING:
                default = f.default
            else:
                assert callable(f.default_factory)
                default = f.default_factory()
            declared.append((f.name, meta, default))
    return declared


def load_fields(cls: type[T], env: Env) -> T:
    """An instance of `cls` with every env-declared field read (ConfigError names it)."""
    values: dict[str, Any] = {}
    for name, meta, default in settings_of(cls):
        values[name] = _read(env, meta, default)
    return cls(**values)


def _read(env: Env, meta: EnvSetting, default: Any) -> Any:
    var, kind = meta.variable, meta.kind
    if kind == "str":
        return env.string(var, default)
    if kind == "int":
        return env.integer(
            var,
            default,
            minimum=None if meta.minimum is None else int(meta.minimum),
            maximum=None if meta.maximum is None else int(meta.maximum),
        )
    if kind == "float":
        return env.number(var, default, minimum=meta.minimum, maximum=meta.maximum)
    if kind == "seconds_ms":
        seconds = env.number(var, default / 1000.0, minimum=meta.minimum, maximum=meta.maximum)
        return round(seconds * 1000)
    if kind == "flag":
        return env.flag(var, default)
    if kind == "choice":
        return env.choice(var, default, meta.choices)
    if kind == "optional_int":
        if env.raw(var) is None:
            return default
        return env.optional_int(var, minimum=None if meta.minimum is None else int(meta.minimum))
    if kind == "name_map_int":
        return parse_name_map(var, env.raw(var), seconds=False) if env.raw(var) else default
    if kind == "name_map_seconds_ms":
        return parse_name_map(var, env.raw(var), seconds=True) if env.raw(var) else default
    raise AssertionError(f"unknown setting kind {kind!r} for {var}")


def parse_name_map(variable: str, text: str | None, *, seconds: bool) -> dict[str, int | None]:
    """`name=3,other=none` -> {"name": 3, "other": None}; with `seconds`, values are seconds
    (fractions allowed) returned as milliseconds, and `none` is refused."""
    parsed: dict[str, int | None] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.rpartition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise ConfigError(variable, f"expected name=value entries, got {item!r}")
        if not seconds and value.lower() in {"none", "unlimited"}:
            parsed[name] = None
            continue
        try:
            number = float(value) if seconds else int(value)
        except ValueError:
            kind = "a number of seconds" if seconds else "an integer or none"
            raise ConfigError(variable, f"{name}: expected {kind}, got {value!r}") from None
        if number < 0:
            raise ConfigError(variable, f"{name}: must be at least 0, got {value}")
        parsed[name] = round(number * 1000) if seconds else int(number)
    return parsed
