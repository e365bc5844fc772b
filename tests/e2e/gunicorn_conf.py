from graceshut.gunicorn import on_starting

__all__ = ["on_starting"]
