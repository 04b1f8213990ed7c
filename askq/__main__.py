import sys

from askq.cli import main

sys.exit(main())
