"""Entry point of `python -m askq.sim`: run the simulator server."""

import sys

from askq.sim.server import main

sys.exit(main())
