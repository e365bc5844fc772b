"""Shutdown handlers, registered where a Django project registers things: ready()."""

from __future__ import annotations

import json
import os
from pathlib import Path

from django.apps import AppConfig

import graceshut.django
from graceshut.contrib.cache import flush_mapping

#: Computed in requests, saved before the process stops.
greetings: dict[str, int] = {}


def save(batch: dict[str, int]) -> None:
    """The cache's writer: a JSON file per worker (a database or Redis in real life)."""
    target = Path(os.environ.get("DJANGO_DEMO_DIR", ".")) / f"greetings-{os.getpid()}.json"
    target.write_text(json.dumps(batch))


class DemoConfig(AppConfig):
    name = "examples.django_project"
    label = "demo"

    def ready(self) -> None:
        flush_mapping(graceshut.django.get_coordinator(), greetings, save)
