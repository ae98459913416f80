"""The ``tamalloc`` command."""
