"""Command-line adapter (``healthlink``)."""
