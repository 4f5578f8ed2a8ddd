"""The ``tenant-backup`` command line: ``parser`` reads the arguments, ``commands`` runs them.
An entry point: it may import every stage, and (lazily, in ``commands``) the flows.
Run it as ``tenant-backup …`` or ``python -m tenant_backup.cli …``.
"""

from tenant_backup.cli.parser import main

__all__ = ["main"]
