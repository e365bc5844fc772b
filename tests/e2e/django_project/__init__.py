"""A minimal Django project served by gunicorn (WSGI) and uvicorn (ASGI) in the e2e tests."""
