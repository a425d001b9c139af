"""mia plugin (being built)."""
