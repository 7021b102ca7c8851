"""doraforwarder: ArgoCD deployments and WebRCA incidents to Apache DevLake, exactly once."""

__version__ = "0.1.0"
