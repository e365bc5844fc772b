"""graceshut.django's settings, and the extras imported only when used."""

from __future__ import annotations

import subprocess
import sys

from .asgi_servers import ROOT


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


SETUP = """
import django
from django.conf import settings
settings.configure(INSTALLED_APPS=["graceshut.django"], GRACESHUT={graceshut!r})
django.setup()
import graceshut.django
c = graceshut.django.get_coordinator()
print(c.settings.grace_period, c.settings.propagation_delay)
"""


def test_settings_configure_the_coordinator() -> None:
    """GRACESHUT's timings reach the coordinator that get_coordinator() returns."""
    result = run(SETUP.format(graceshut={"GRACE_PERIOD": 12, "PROPAGATION_DELAY": 2}))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["12.0", "2.0"]


def test_an_unknown_setting_fails_at_startup_naming_it() -> None:
    """A misspelt key is ImproperlyConfigured when Django sets up, naming the key."""
    result = run(SETUP.format(graceshut={"GRACE_PERIODS": 12}))
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "GRACE_PERIODS" in result.stderr


def test_a_bad_value_names_the_setting() -> None:
    """A negative grace period is graceshut's ConfigError, naming grace_period."""
    result = run(SETUP.format(graceshut={"GRACE_PERIOD": -1}))
    assert result.returncode != 0
    assert "ConfigError" in result.stderr
    assert "grace_period" in result.stderr


def test_the_wsgi_modules_import_neither_flask_nor_django() -> None:
    """graceshut.wsgi, .flask, .django and .gunicorn load without their frameworks."""
    result = run(
        "import sys, graceshut.wsgi, graceshut.flask, graceshut.django, graceshut.gunicorn\n"
        "print(sorted(m for m in ('flask', 'django', 'werkzeug') if m in sys.modules))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
