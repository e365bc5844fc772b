"""The machinery behind ``graceshut simulate``: a kubelet, a Service and clients, locally.

The command line is the interface; these modules are private. ``_load`` puts keep-alive
load on the app, ``_actions`` runs hooks and probes the way the kubelet does, ``_manifest``
reads them from a pod or workload manifest, ``_plan`` merges the manifest with the
options, ``_container`` runs the app as a container would, ``_kubelet`` plays the
termination, ``_run`` ties a run together and ``_report`` renders what happened.
"""

__all__: list[str] = []
