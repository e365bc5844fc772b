"""Run the e2e app under hypercorn with graceshut owning the signals."""

from __future__ import annotations

import sys

from hypercorn.config import Config

import graceshut.hypercorn
from tests.e2e.app import app, coordinator

if __name__ == "__main__":
    config = Config()
    config.bind = [f"127.0.0.1:{sys.argv[1]}"]
    config.graceful_timeout = 5
    worker_class = sys.argv[2]
    sys.exit(graceshut.hypercorn.run(app, coordinator, config, worker_class=worker_class))  # type: ignore[arg-type]
