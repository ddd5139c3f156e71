"""A plug-in that fails to import (tests/plugins/test_plugins.py checks the error names it)."""

raise RuntimeError("broken on purpose")
