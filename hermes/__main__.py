"""`python -m hermes ...`: see hermes/cli.py."""

import sys

from hermes.cli import main

sys.exit(main())
