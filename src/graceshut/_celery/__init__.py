"""The Celery adapter's parts: the worker loop's heartbeat, and the bridge to its tasks."""
