"""`python -m pipeline evaluate ...` is `headstream evaluate ...`."""
import sys

from pipeline.cli import main

sys.exit(main())
