"""A restore's steps (check, verify, plan, apply, log), the engine that runs one restore in one
transaction, and the SQL of staging, counting, comparing (once, into a delta), applying and
checking a table, and the room all of it needs on the database server.
May import: backup, ledger, artifact, tenancy and the plumbing.
"""

CONFIRMATION = "RESTORE"  # the word a restore takes (here, so that the CLI checks it without importing the engine)
