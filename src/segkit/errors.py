"""User-facing errors: one line that names the problem and the fix."""


class SegkitError(Exception):
    """An error caused by the user's input; the CLI prints it without a traceback."""
