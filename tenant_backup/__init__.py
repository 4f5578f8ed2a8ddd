"""tenant-backup's logic, which imports no Prefect; its packages follow the data flow.

tenancy (what a tenant is) -> artifact (bytes at rest) | ledger (the record) -> backup -> restore
-> operations (retention, schedules, maintenance, reconcile); cli and demo are the entry points.
Every stage uses the flat plumbing: errors, segments, settings, db, storage, spool, progress,
results. No stage imports a later one (import-linter checks it: ``make lint``).
"""
