"""Settings of the e2e Django project."""

from __future__ import annotations

import logging
import sys

logging.basicConfig(
    level=logging.INFO,
    stream=sys.stderr,
    format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
)

SECRET_KEY = "e2e-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.e2e.django_project.urls"
INSTALLED_APPS = ["graceshut.django", "tests.e2e.django_project.apps.ProjectConfig"]
MIDDLEWARE: list[str] = []
DATABASES: dict[str, object] = {}
USE_TZ = True
GRACESHUT = {"RETRY_AFTER": 3}
