"""longnet plugin: stamp."""
