"""The process: signals, exit status, the pod's worker group, `/proc`, the pod secret."""
