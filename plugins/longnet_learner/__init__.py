"""longnet plugin: learner."""
