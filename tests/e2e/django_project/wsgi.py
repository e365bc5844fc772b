"""The project's WSGI application, as a Django project's wsgi.py has it."""

import os

import graceshut.django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.e2e.django_project.settings")

application = graceshut.django.get_wsgi_application()
