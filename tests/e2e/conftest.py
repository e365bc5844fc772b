"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

from .test_rolling_restart import haproxy

__all__ = ["haproxy"]
