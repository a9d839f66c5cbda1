"""`python -m agent.ctl`: camera-ctl without its console script."""

import sys

from agent.ctl.main import main

sys.exit(main())
