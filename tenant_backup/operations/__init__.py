"""Operations on stored backups: retention (pure decisions), schedules (backup_schedules rows as
cron schedules), maintenance (prune, download URLs, delete) and reconcile (storage vs ledger).
May import: every stage before it (restore, backup, ledger, artifact, tenancy) and the plumbing.
"""
