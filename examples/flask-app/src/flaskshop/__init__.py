"""A tiny Flask shop: POST /orders stores an order and, once the transaction commits, pushes
the job that sends its receipt (flaskshop.jobs:send_receipt), which a queuefleet worker runs.

Settings come from the environment, as on a server: FLASKSHOP_DATABASE_URL (SQLAlchemy URL of
the app's database), QUEUEFLEET_REDIS_URL and QUEUEFLEET_PREFIX (the workers' own values).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Flask

from .models import db


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(
        SQLALCHEMY_DATABASE_URI=os.environ.get("FLASKSHOP_DATABASE_URL", f"sqlite:///{Path.cwd() / 'flaskshop.sqlite3'}"),
        QUEUEFLEET_REDIS_URL=os.environ.get("QUEUEFLEET_REDIS_URL", "redis://127.0.0.1:6379/0"),
        QUEUEFLEET_PREFIX=os.environ.get("QUEUEFLEET_PREFIX", "queuefleet"),
    )
    app.config.update(config or {})
    db.init_app(app)
    from . import views

    app.register_blueprint(views.bp)
    with app.app_context():
        db.create_all()  # a tiny example: no migrations
    return app
