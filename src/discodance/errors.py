"""The one exception type users see: the CLI prints its message on one line and exits non-zero."""


class DiscodanceError(Exception):
    """A problem with the user's input (a path, a file, a hyperparameter), stated in one line."""


def require(condition: bool, message: str) -> None:
    """Raise DiscodanceError(message) unless condition holds."""
    if not condition:
        raise DiscodanceError(message)
