"""ASGI entry point: ``uvicorn examples.django_project.asgi:application``."""

import os

import graceshut.django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_project.settings")

application = graceshut.django.get_asgi_application()
