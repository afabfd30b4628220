import sys

from fedkt.cli import main

sys.exit(main())
