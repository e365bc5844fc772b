"""Two views: a fast one and a slow one that names its worker."""

from __future__ import annotations

import asyncio
import os

from django.http import HttpRequest, HttpResponse
from django.urls import path


async def slow(request: HttpRequest) -> HttpResponse:
    await asyncio.sleep(float(request.GET.get("seconds", "2")))
    return HttpResponse("slow ok", headers={"x-pid": str(os.getpid())})


def home(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", headers={"x-pid": str(os.getpid())})


urlpatterns = [path("", home), path("slow", slow)]
