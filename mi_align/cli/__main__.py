"""``python -m mi_align.cli``: the ``mi-align`` command."""

import sys

from mi_align.cli.main import main

sys.exit(main())
