"""Command implementations behind the ``sparrow`` CLI (one module per command)."""
