"""Typed, validated configs: unknown keys and impossible values are errors, never silently ignored."""
from __future__ import annotations

import dataclasses
import json

from .errors import DiffusekitError


class Config:
    """Mixin for dataclass configs: from_dict rejects unknown keys; subclasses validate in validate()."""

    def __post_init__(self):
        self.validate()

    def validate(self):
        pass

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise DiffusekitError(f"unknown {cls.__name__} key(s): {', '.join(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def __str__(self):
        return json.dumps(self.to_dict(), indent=2)


def check(cond: bool, message: str):
    if not cond:
        raise DiffusekitError(message)


def check_choice(name: str, value, choices):
    check(value in choices, f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
