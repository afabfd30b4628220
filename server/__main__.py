"""``python -m fedkt.server``: the ``fedkt`` command."""

import sys

from fedkt.server.cli import main

sys.exit(main())
