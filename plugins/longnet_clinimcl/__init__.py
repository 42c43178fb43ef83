"""longnet plugin: clinimcl."""
