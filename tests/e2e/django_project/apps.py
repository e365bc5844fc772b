"""Shutdown handlers registered where Django projects register things: AppConfig.ready."""

from __future__ import annotations

import os

from django.apps import AppConfig

import graceshut
import graceshut.django


def record(line: str) -> None:
    with open(os.environ.get("E2E_EVENTS", os.devnull), "a", encoding="utf-8") as f:
        f.write(f"{line} {os.getpid()}\n")


class ProjectConfig(AppConfig):
    name = "tests.e2e.django_project"
    label = "e2e_project"

    def ready(self) -> None:
        coordinator = graceshut.django.get_coordinator()
        for phase in graceshut.Phase:

            def handler(ctx: graceshut.ShutdownContext) -> None:
                record(ctx.phase.value)

            coordinator.add_handler(handler, phase=phase, timeout=2.0, name=f"e2e-{phase.value}")
