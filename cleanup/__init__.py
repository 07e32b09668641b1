"""cleanup: guarded storage cleanup.

Compute the unreferenced file set, check the safety invariants (I1-I16 of
SPEC.md), write a content-addressed plan for two-person review, and only then
let a guarded executor touch storage.

Heavy libraries (duckdb, pyarrow, boto3) are imported lazily by the modules
that need them, so ``cleanup --help`` stays fast.
"""

__version__ = "0.1.0"
