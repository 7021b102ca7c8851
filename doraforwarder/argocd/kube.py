"""A Kubernetes API client for the watchers, from the configuration.

``argocd.kubeconfig`` / ``argocd.context`` when set; else the pod's service
account (in-cluster); else ``KUBECONFIG`` or ``~/.kube/config``. urllib3's own
retries are off: every retry is ours, with backoff, logged and counted.

Whatever goes wrong while loading (no file, an unreadable or malformed file,
an unknown context) is raised as one :class:`KubeAccessError` whose message
names the file and the problem in one line, for ``run`` (status and logs)
and ``backfill`` (exit 2) alike.
"""

from __future__ import annotations

import os
import warnings

import yaml
from kubernetes.client import ApiClient, Configuration
from kubernetes.config import load_incluster_config, load_kube_config
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import InsecureRequestWarning

from doraforwarder import __version__
from doraforwarder.config import ArgoCDConfig
from doraforwarder.errors import KubeAccessError as KubeAccessError  # its old home, still exported
from doraforwarder.logging import get_logger

log = get_logger("argocd")

USER_AGENT = f"doraforwarder/{__version__}"


def kubeconfig_source(config: ArgoCDConfig) -> str:
    """Where the kubeconfig is read from, as an operator would name it."""
    if config.kubeconfig:
        return f"argocd.kubeconfig {config.kubeconfig}"
    if os.environ.get("KUBECONFIG"):
        return f"KUBECONFIG {os.environ['KUBECONFIG']}"
    return "~/.kube/config"


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    return " ".join(str(exc).split()) or type(exc).__name__


def build_api_client(config: ArgoCDConfig) -> ApiClient:
    """An :class:`ApiClient`; raises :class:`KubeAccessError` naming what is missing."""
    configuration = Configuration()
    try:
        if config.kubeconfig or config.context:
            if config.kubeconfig and not os.path.isfile(config.kubeconfig):
                raise KubeAccessError(
                    f"no Kubernetes access: argocd.kubeconfig {config.kubeconfig} "
                    + ("is not a file" if os.path.exists(config.kubeconfig) else "does not exist"))
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
                # KUBECONFIG as it is now, as kubeconfig_source names it: the client
                # library's own default was read once, when it was imported.
                load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=os.environ.get("KUBECONFIG") or None,
                    client_configuration=configuration, persist_config=False
                )
    except KubeAccessError:
        raise
    except (ConfigException, OSError, yaml.YAMLError, ValueError, TypeError, KeyError) as exc:
        raise KubeAccessError(
            f"no Kubernetes access: not in a cluster and {kubeconfig_source(config)} is "
            f"unusable: {_one_line(exc)}" if not (config.kubeconfig or config.context)
            else f"no Kubernetes access: {kubeconfig_source(config)}"
            + (f" (context {config.context})" if config.context else "")
            + f" is unusable: {_one_line(exc)}"
        ) from None
    configuration.retries = False
    if not configuration.verify_ssl:
        # urllib3 shows InsecureRequestWarning "always": two plain-text stderr lines for
        # every list page and watch (136 in a few minutes against a real API server).
        # Said once, in the log, instead.
        warnings.filterwarnings("ignore", category=InsecureRequestWarning)
        log.warning("kubernetes API server certificate not verified "
                    "(insecure-skip-tls-verify in the kubeconfig)")
    client = ApiClient(configuration)
    # The API server's audit log (and the RBAC tests' ledger) tells our calls apart.
    client.user_agent = USER_AGENT
    return client
