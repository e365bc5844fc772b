"""Settings: graceshut.django in INSTALLED_APPS, and its options in GRACESHUT."""

from __future__ import annotations

import logging
import os

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "change-me")
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "examples.django_project.urls"
INSTALLED_APPS = [
    "graceshut.django",
    "examples.django_project.apps.DemoConfig",
]
MIDDLEWARE: list[str] = []
DATABASES: dict[str, object] = {}
USE_TZ = True

# Every key is optional; None (or leaving it out) means the GRACESHUT_* variable, else
# graceshut's default.
GRACESHUT = {
    "GRACE_PERIOD": None,
    "PROPAGATION_DELAY": None,
    "TOKEN": None,  # the shutdown route's bearer token, or GRACESHUT_TOKEN
    "READINESS_PATH": "/readyz",
    "LIVENESS_PATH": "/livez",
    "SHUTDOWN_PATH": "/shutdown",
}
