"""`python -m agfast` is the `agfast` command."""

import sys

from agfast.cli import main

sys.exit(main())
