"""The one table of invariant names and exit codes (SPEC.md).

Every module that names an invariant imports it from here, and the docs list the
same names: an error message starts with the name, so a reader can go from a
refusal to its SPEC row and its tests.
"""

from __future__ import annotations

I1 = "I1 strict-cutoff"
I2 = "I2 timestamp-precision"
I3 = "I3 snapshot-sound"
I4 = "I4 paths-agree"
I5 = "I5 blast-radius"
I6 = "I6 plan-integrity"
I7 = "I7 two-person"
I8 = "I8 presence"
I9 = "I9 reconcile"
I10 = "I10 phased"
I11 = "I11 recoverable"
I12 = "I12 exclusive"
I13 = "I13 residency"
I14 = "I14 audit"
I15 = "I15 clocks-agree"
I16 = "I16 sentinels"
I17 = "I17 trust-root"
I18 = "I18 store-clock"
I19 = "I19 confinement"
I20 = "I20 table-metadata"

INVARIANTS: tuple[str, ...] = (I1, I2, I3, I4, I5, I6, I7, I8, I9, I10, I11, I12, I13, I14,
                               I15, I16, I17, I18, I19, I20)

EXIT_OK = 0
EXIT_BUG = 1
EXIT_USAGE = 2
EXIT_INVARIANT = 3
EXIT_SIGNOFF = 4
EXIT_HALT = 5
EXIT_LOCKED = 6

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "done",
    EXIT_BUG: "unexpected error (a bug)",
    EXIT_USAGE: "usage error",
    EXIT_INVARIANT: "refused by a safety invariant (the message names it)",
    EXIT_SIGNOFF: "sign-off missing or invalid",
    EXIT_HALT: "reconciliation halt",
    EXIT_LOCKED: "another execution holds the store's lock",
}
