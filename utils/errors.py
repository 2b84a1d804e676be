"""The one-line error policy: bad input raises UsageError, which a script prints as one line and exits with 2."""


class UsageError(Exception):
    """Bad input: reported as one line (the problem and the fix) with exit status 2."""


def first_line(err: BaseException) -> str:
    """An exception's first line of text, or its type's name if it has none (for one-line messages)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
