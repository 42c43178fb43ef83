"""longnet plugin: tfm."""
