"""examples/flask-app: a Flask app with Flask-SQLAlchemy pushes a job from a request once the
transaction commits, and a real worker runs it. The app is served in-process by its test
client; its database is a SQLite file the worker process opens too."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from conftest import QueueCli

SRC = Path(__file__).resolve().parents[2] / "examples" / "flask-app" / "src"
RECEIPT = "flaskshop.jobs:send_receipt"


@pytest.fixture(scope="module")
def shop(tmp_path_factory, redis_server):
    sys.path.insert(0, str(SRC))
    from flaskshop import create_app

    database = f"sqlite:///{tmp_path_factory.mktemp('flaskshop') / 'shop.sqlite3'}"
    app = create_app({"SQLALCHEMY_DATABASE_URI": database, "QUEUEFLEET_REDIS_URL": redis_server.url})
    yield app
    sys.path.remove(str(SRC))


@pytest.fixture
def app(shop, r):
    from flaskshop.models import Order, Product, db

    with shop.app_context():
        db.session.query(Order).delete()
        db.session.merge(Product(sku="tea", stock=5))
        db.session.commit()
    return shop


@pytest.fixture
def worker(app, redis_url, sqlite_url, tmp_path):
    """The real `queue` command with the shop's code and settings, as a release would have them."""
    cli = QueueCli(redis_url, sqlite_url, tmp_path)
    cli.env.update({"PYTHONPATH": os.pathsep.join([str(SRC), cli.env["PYTHONPATH"]]),
                    "FLASKSHOP_DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"], "QUEUEFLEET_JOBS": "flaskshop.jobs"})
    cli.run("migrate")
    yield cli
    cli.close()


def orders(app) -> list[tuple[int, str, int]]:
    from flaskshop.models import Order, db

    with app.app_context():
        return [(o.id, o.email, o.receipts_sent) for o in db.session.query(Order).order_by(Order.id)]


def test_an_order_pushes_its_receipt_after_commit_and_a_worker_sends_it_once(app, worker, r):
    response = app.test_client().post("/orders", json={"email": "ada@example.com", "sku": "tea", "quantity": 2})
    assert response.status_code == 201, response.json
    order = response.json["order"]
    assert orders(app) == [(order, "ada@example.com", 0)]
    assert r.llen("queuefleet:queue:default") == 1

    result = worker.run("work", "--stop-when-empty")
    assert result.stdout.count(f"DONE     receipt-{order} {RECEIPT}") == 1, result.stdout + result.stderr
    assert orders(app) == [(order, "ada@example.com", 1)]
    assert "no failed jobs" in worker.run("failed").stdout


def test_an_order_that_rolls_back_pushes_nothing(app, r):
    response = app.test_client().post("/orders", json={"email": "bob@example.com", "sku": "tea", "quantity": 9})
    assert response.status_code == 409 and response.json == {"error": "not enough tea in stock"}
    assert orders(app) == []
    assert r.llen("queuefleet:queue:default") == 0 and r.zcard("queuefleet:queue:default:delayed") == 0


def test_the_push_waits_for_the_commit_and_a_rollback_or_close_forgets_it(app, r):
    from flaskshop.models import Order, db
    from flaskshop.queueing import push_after_commit

    with app.app_context():
        db.session.add(Order(email="c@example.com", sku="tea", quantity=1))
        db.session.flush()
        push_after_commit(RECEIPT, {"order": 1})
        assert r.llen("queuefleet:queue:default") == 0, "nothing before the commit"
        db.session.commit()
        assert r.llen("queuefleet:queue:default") == 1

        push_after_commit(RECEIPT, {"order": 2})
        db.session.rollback()
        push_after_commit(RECEIPT, {"order": 3})
        db.session.close()  # what the end of a request does to an uncommitted session
        db.session.add(Order(email="d@example.com", sku="tea", quantity=1))
        db.session.commit()
        assert r.llen("queuefleet:queue:default") == 1, "a forgotten push does not leak into a later commit"
