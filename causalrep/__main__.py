"""python -m causalrep COMMAND ...: the `causalrep` command (cli.py)."""
import sys

from .cli import main

sys.exit(main())
