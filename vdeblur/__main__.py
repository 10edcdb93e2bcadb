"""`python -m vdeblur` == `vdeblur`."""

import sys

from vdeblur.cli import main

sys.exit(main())
