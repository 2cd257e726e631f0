"""The errors minisd raises for bad input, and the exceptions the CLI reports as one line.

A `UserError` says what was wrong (the argument, file or value) and how to fix it; it is a
ValueError, so code written against the libraries' ValueErrors keeps working.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user: an argument, a file or a setting; the message names it and a fix."""


class NonFiniteError(UserError, FloatingPointError):
    """A tensor became NaN or infinite (sampling, decoding, or weights read from a file)."""


# what the command line reports as `minisd: error: <message>` (exit status 2) instead of a traceback
USER_ERRORS = (ValueError, TypeError, OSError, NotImplementedError, ImportError, ArithmeticError)
