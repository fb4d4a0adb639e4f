"""The one exception type: a problem with the user's input or files, said in one line.

Messages name the parameters they are about by their Python names (``steps must be at least 1``) and list them in
``params``; the command line rewrites those names as its flags (``--steps must be at least 1``) in one place."""
from __future__ import annotations


class DiffusekitError(Exception):
    """A problem with the user's input or files, described in one line; params: the parameter names it mentions."""

    def __init__(self, message: str, *params: str):
        super().__init__(" ".join(str(message).split("\n")))  # one line, whatever a library it quotes said
        self.params = params


def check(cond: bool, message: str, *params: str):
    if not cond:
        raise DiffusekitError(message, *params)


def check_choice(name: str, value, choices):
    check(value in choices, f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}", name)
