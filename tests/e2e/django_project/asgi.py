"""The project's ASGI application, as a Django project's asgi.py has it."""

import os

import graceshut.django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.e2e.django_project.settings")

application = graceshut.django.get_asgi_application()
