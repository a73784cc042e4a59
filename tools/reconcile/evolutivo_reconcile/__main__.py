import sys

from evolutivo_reconcile.cli import main

sys.exit(main())
