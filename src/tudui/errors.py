"""The one exception type for errors a user can cause."""


class TuduiError(Exception):
    """A problem the user can fix (bad path, bad value, mismatched weights).

    The CLI prints its message on one line and exits non-zero; the message says
    what was wrong and, where there is one, what to do instead.
    """
