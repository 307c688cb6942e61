"""`python -m planner ...`: the command line (planner/app.py)."""

import sys

from planner.app import main

if __name__ == "__main__":
    sys.exit(main())
