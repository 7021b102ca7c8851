"""WebRCA source: poll incidents, send what changed."""
