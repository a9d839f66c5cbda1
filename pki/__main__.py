import sys

from pki.cli import main

sys.exit(main())
