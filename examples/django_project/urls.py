"""Two views; graceshut's routes are served before Django's URL resolver."""

from __future__ import annotations

import time

from django.http import HttpRequest, HttpResponse
from django.urls import path

from .apps import greetings


def hello(request: HttpRequest) -> HttpResponse:
    name = request.GET.get("name", "world")
    greetings[name] = greetings.get(name, 0) + 1
    return HttpResponse(f"hello {name}\n")


def slow(request: HttpRequest) -> HttpResponse:
    time.sleep(float(request.GET.get("seconds", "2")))
    return HttpResponse("slow hello\n")


urlpatterns = [path("", hello), path("slow", slow)]
