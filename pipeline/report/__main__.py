"""`python -m pipeline.report OUTPUT_DIR`: the `headstream report` command."""
import sys

from pipeline.report import main

sys.exit(main())
