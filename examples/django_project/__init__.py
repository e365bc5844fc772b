"""A Django project wired with graceshut.django: see settings.py, wsgi.py and asgi.py."""
