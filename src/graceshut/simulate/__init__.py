"""The machinery behind ``graceshut simulate``: a kubelet, a Service and clients, locally.

The command line is the interface; these modules are private. ``_load`` puts keep-alive
load on the app, ``_actions`` runs hooks and probes the way the kubelet does, ``_manifest``
reads them from a pod or workload manifest, ``_plan`` merges the manifest with the
options, ``_container`` runs the app as a container would (as PID 1 of its own PID
namespace through ``_pid1``, where the machine allows it), ``_kubelet`` plays the
termination, ``_service`` routes new connections as kube-proxy does, ``_run`` ties a run
together, ``_report`` and ``_explain`` render what happened and why, ``_junit`` and
``_picture`` write it for CI and for people.
"""

__all__: list[str] = []
