"""The pure core: no clock, no I/O, no boto3/duckdb/click imports.

Time comes in as an argument (``now``), never from the clock. That is what makes
the invariants property-testable.
"""
