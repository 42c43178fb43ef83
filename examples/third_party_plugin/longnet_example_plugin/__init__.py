"""Example third-party trainer plugin for longnet (installed separately, discovered via its entry point)."""
__version__ = "0.1.0"
