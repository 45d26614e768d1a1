"""The one exception type for errors a user can cause."""


class TuduiError(Exception):
    """A problem the user can fix (bad path, bad value, mismatched weights).

    The CLI prints its message on one line and exits non-zero; the message says
    what was wrong and, where there is one, what to do instead.
    """


class SettingError(TuduiError):
    """A setting that cannot be, on the command line or in a settings file (an unknown name, a
    value outside its rule). The CLI says it as the usage mistake it is, with argparse's exit
    status 2, where other errors exit with 1."""
