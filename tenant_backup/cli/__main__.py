"""``python -m tenant_backup.cli``."""

import sys

from tenant_backup.cli.parser import main

sys.exit(main())
