"""The jobs the workers run (queue_worker_jobs: [flaskshop.jobs]).

The worker is not a Flask server: a job makes the app once per worker process and runs in its
app context, so db.session is the app's and is removed (its connection returned) after the job.
"""

from __future__ import annotations

import functools
from datetime import datetime, timezone

from flask import Flask

from . import create_app
from .models import Order, db


@functools.cache
def _app() -> Flask:
    return create_app()


def send_receipt(data):
    with _app().app_context():
        order = db.session.get(Order, data["order"])
        if order is None:  # cannot happen when the push follows the commit
            raise LookupError(f"order {data['order']} does not exist")
        # The mail itself would go here (flask-mail, an API call). Handlers may run twice
        # (delivery is at least once): a real one would check receipt_sent_at first.
        order.receipts_sent += 1
        order.receipt_sent_at = datetime.now(timezone.utc)
        db.session.commit()
