"""Typed, validated configs: one dataclass per command, printable, saved with what it made. Unknown keys and impossible
values are errors, never silently ignored; fields left at None were not given (a method that does not read an option
says so when it is given)."""
from __future__ import annotations

import dataclasses
import json
import numbers

from .errors import DiffusekitError, check, check_choice  # noqa: F401  (re-exported for the configs)


class Config:
    """Mixin for dataclass configs: from_dict rejects unknown keys; subclasses validate in validate()."""

    def __post_init__(self):
        self.validate()

    def validate(self):
        pass

    @classmethod
    def from_dict(cls, d: dict):
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise DiffusekitError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                                  f"({cls.__name__} takes {', '.join(names)})")
        types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
        for name, value in d.items():
            check(_has_type(value, types[name]), f"{name} must be {_type_words(types[name])}, got {value!r}", name)
        return cls(**d)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def given(self, *names) -> list:
        """Those of `names` that were given (not None)."""
        return [n for n in names if getattr(self, n) is not None]

    def unused(self, names, why: str, *also: str):
        """Options given that the chosen method does not read: said, not silently ignored. also: other parameters
        the message names."""
        given = self.given(*names)
        check(not given, f"{given[0] if given else ''} {why}", *given[:1], *also)

    def __str__(self):
        return json.dumps(self.to_dict(), indent=2)


# what a value given for a field of each annotation may be (numpy numbers included)
_TYPES = {"int": lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool),
          "float": lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool),
          "str": lambda v: isinstance(v, str), "bool": lambda v: isinstance(v, (bool, numbers.Integral)),
          "dict": lambda v: isinstance(v, dict)}


def _has_type(value, annotation: str) -> bool:
    """Whether value fits a field annotated `annotation` (a string: "int | None", "float", "list[int] | None", ...)."""
    kinds = [k.strip() for k in annotation.split("|")]
    if value is None:
        return "None" in kinds
    return any(_TYPES.get(k.split("[")[0], lambda v: True)(value) if not k.startswith(("list", "tuple"))
               else isinstance(value, (list, tuple, str)) for k in kinds if k != "None")


def _type_words(annotation: str) -> str:
    words = {"int": "a whole number", "float": "a number", "str": "text", "bool": "true or false", "dict": "a mapping"}
    kinds = [k.strip().split("[")[0] for k in annotation.split("|") if k.strip() != "None"]
    return " or ".join(words.get(k, "a list" if k in ("list", "tuple") else k) for k in kinds)
