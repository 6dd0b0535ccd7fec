"""``python -m qzhou_plugins.server --model M --port P``: the same server as ``qzhou-plugins serve``."""

from .options import main

raise SystemExit(main())
