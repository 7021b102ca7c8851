"""``python -m doraforwarder``: the same as the ``doraforwarder`` command."""

import sys

from doraforwarder.cli import main

sys.exit(main())
