"""The Django app config: checks ``settings.GRACESHUT`` when Django starts."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["GraceshutConfig"]


class GraceshutConfig(AppConfig):  # type: ignore[misc]  # Django has no type hints
    """``INSTALLED_APPS = [..., "graceshut.django"]``."""

    name = "graceshut.django"
    label = "graceshut"
    verbose_name = "graceshut"

    def ready(self) -> None:
        """Build the coordinator now, so that a bad setting fails at startup."""
        from ._settings import get_coordinator  # noqa: PLC0415 - after settings load

        get_coordinator()
