"""``python -m qzhou_plugins.cli``: the same as the ``qzhou-plugins`` command."""

import sys

from . import main

sys.exit(main())
