"""Example longnet plugin: how many days lie between two scans of one subject."""
