"""longnet plugin: longrep."""
