"""Entry point of `python -m sim`: run the simulator server."""

import sys

from sim.server import main

sys.exit(main())
