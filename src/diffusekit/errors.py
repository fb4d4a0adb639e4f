"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class DiffusekitError(Exception):
    """A problem with the user's input or files, described in one line."""
