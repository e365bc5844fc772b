"""The core: the coordinator, its handlers, phases, budget, run state and report.

It knows no framework, server, integration or tool.
"""
