"""Commit resolution: container image tags to GitHub commits."""
