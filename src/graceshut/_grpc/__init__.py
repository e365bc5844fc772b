"""The gRPC adapter's parts: counting calls through an interceptor, and their metrics."""
