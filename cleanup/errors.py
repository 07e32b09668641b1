"""The error hierarchy and its exit codes (SPEC.md, "Exit codes"; the same numbers as
``cleanup.core.names.EXIT_*``, checked by a test: errors sits below core).

Only the CLI maps errors to exit codes and prints them; library code raises.
Every error carries a message that says what was wrong (with the numbers) and,
where there is one, a hint naming the fix.
"""

from __future__ import annotations


class CleanupError(Exception):
    """Base class. ``exit_code`` is the documented process exit status."""

    exit_code: int = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(CleanupError):
    """Bad input: a missing file, a malformed time, an unknown store scheme (exit 2)."""

    exit_code = 2


class InvariantViolation(CleanupError):
    """A safety invariant refused the operation (exit 3).

    ``invariant`` is the SPEC.md name, e.g. ``"I1 strict-cutoff"``; the message
    always starts with it so a reader can go from the refusal to its test.
    """

    exit_code = 3

    def __init__(self, invariant: str, detail: str, hint: str | None = None) -> None:
        super().__init__(f"{invariant}: {detail}", hint)
        self.invariant = invariant
        self.detail = detail


class SignoffError(CleanupError):
    """Sign-off missing or invalid (exit 4)."""

    exit_code = 4


class ReconciliationHalt(CleanupError):
    """A referenced key was found in the deletion set during execution (exit 5)."""

    exit_code = 5


class LockHeld(CleanupError):
    """Another execution holds the store's lock (exit 6)."""

    exit_code = 6


class StoreError(CleanupError):
    """A store could not be reached or answered unexpectedly (exit 1 unless subclassed)."""

    exit_code = 1
