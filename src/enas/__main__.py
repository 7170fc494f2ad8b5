"""``python -m enas``: the same as the ``enas`` command (also under torchrun)."""

import sys

from enas.cli.main import main

sys.exit(main())
