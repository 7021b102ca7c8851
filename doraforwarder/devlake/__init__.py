"""DevLake sink: contract payloads, team routing, delivery."""
