"""The errors the command line turns into one line and exit code 2.

They live apart from what raises them (the configuration's pydantic models,
the Kubernetes client) so that ``doraforwarder`` can catch them without
importing either: ``--help``, ``version`` and ``check-config`` never load the
Kubernetes client. :mod:`doraforwarder.config` and
:mod:`doraforwarder.argocd.kube` export them under their old names.
"""


class ConfigError(Exception):
    """A configuration problem, already phrased for the operator (exit code 2)."""


class KubeAccessError(Exception):
    """No usable Kubernetes configuration; the message is one line for the operator."""
