"""``python -m sddhr.cli`` (as torchrun starts it): the ``sddhr`` command."""

import sys

from . import main

sys.exit(main())
