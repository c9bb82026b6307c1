"""Adapters shipped with the core (the embedded ``sqlite`` adapter)."""
