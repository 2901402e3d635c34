"""``python -m modelbroker``: the ``modelbroker`` command."""

import sys

from modelbroker._cli.main import main

sys.exit(main())
