"""ArgoCD source: watch Applications, detect deployments."""
