"""Operations on stored backups: retention (pure decisions), schedules (backup_schedules rows as
cron schedules), and maintenance (prune, reconcile, download URLs, delete).
May import: every stage before it (restore, backup, ledger, artifact, tenancy) and the plumbing.
"""
