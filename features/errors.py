"""Errors a user can act on: the CLI prints them as one line and exits non-zero."""


class CTOError(Exception):
    """A user-facing error: message names the file, column, row and rule where it can."""

    exit_code = 2
