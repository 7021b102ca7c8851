"""Operator tools built from the daemon's own parts: doctor, backfill, demo."""
