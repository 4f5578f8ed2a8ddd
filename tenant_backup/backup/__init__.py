"""A backup's steps: plan, ledger entry, extraction inside one snapshot (COPY streaming), and the
artifact's assembly and upload.
May import: ledger, artifact, tenancy and the plumbing.
"""
