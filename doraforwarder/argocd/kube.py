"""A Kubernetes API client for the watchers, from the configuration.

``argocd.kubeconfig`` / ``argocd.context`` when set; else the pod's service
account (in-cluster); else ``KUBECONFIG`` or ``~/.kube/config``. urllib3's own
retries are off: every retry is ours, with backoff, logged and counted.
"""

from __future__ import annotations

from kubernetes.client import ApiClient, Configuration
from kubernetes.config import load_incluster_config, load_kube_config
from kubernetes.config.config_exception import ConfigException

from doraforwarder.config import ArgoCDConfig


def build_api_client(config: ArgoCDConfig) -> ApiClient:
    """An :class:`ApiClient`; raises ``ConfigException`` naming what is missing."""
    configuration = Configuration()
    if config.kubeconfig or config.context:
        load_kube_config(  # type: ignore[no-untyped-call]
            config_file=config.kubeconfig,
            context=config.context,
            client_configuration=configuration,
            persist_config=False,
        )
    else:
        try:
            load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except ConfigException:
            load_kube_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration, persist_config=False
            )
    configuration.retries = False
    return ApiClient(configuration)
