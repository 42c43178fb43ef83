"""longnet: self-configuring, plugin-extensible toolkit for longitudinal medical imaging."""
__version__ = "0.1.0"
