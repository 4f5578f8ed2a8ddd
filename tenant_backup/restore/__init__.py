"""A restore's steps (check, verify, plan, apply, log), the engine that runs one restore in one
transaction, and the SQL of staging, counting, applying and checking a table.
May import: backup, ledger, artifact, tenancy and the plumbing.
"""
