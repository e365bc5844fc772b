"""Django: an app for ``INSTALLED_APPS``, settings, and the WSGI and ASGI applications.

``pip install graceshut[django]``, then::

    # settings.py
    INSTALLED_APPS = [..., "graceshut.django"]
    GRACESHUT = {"GRACE_PERIOD": 30, "PROPAGATION_DELAY": 5}  # optional

    # wsgi.py
    application = graceshut.django.get_wsgi_application()

    # asgi.py
    application = graceshut.django.get_asgi_application()

    # any app's AppConfig.ready()
    @graceshut.django.get_coordinator().on_shutdown("flush")
    def flush_cache() -> None: ...

The graceshut parts go around Django's own application rather than in ``MIDDLEWARE``:
a Django middleware returns before a streamed response is sent, cannot see the ASGI
lifespan (Django refuses it), and the probes must answer without Django's URL
resolver, sessions or database middleware in their way.
"""

from __future__ import annotations

from ._settings import get_coordinator, options
from ._wiring import get_asgi_application, get_wsgi_application

__all__ = ["get_asgi_application", "get_coordinator", "get_wsgi_application", "options"]
