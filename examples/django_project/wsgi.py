"""WSGI entry point: ``gunicorn -c python:graceshut.gunicorn examples.django_project.wsgi``."""

import os

import graceshut.django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_project.settings")

application = graceshut.django.get_wsgi_application()
