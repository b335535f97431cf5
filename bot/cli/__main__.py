"""``python -m bot.cli``: the hubwatch command without its installed entry point."""

import sys

from bot.cli import main

sys.exit(main())
