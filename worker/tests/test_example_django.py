"""examples/django-app: a Django view pushes a job with transaction.on_commit, and a real worker,
started with `--init django:setup`, runs it through the ORM. The app is served in-process by
Django's test client against a SQLite file the worker process opens too, with real transactions
(no TestCase wrapping them, so on_commit runs when the view's atomic block commits)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from conftest import QueueCli
from servers import wait_for

SRC = Path(__file__).resolve().parents[2] / "examples" / "django-app" / "src"
RECEIPT = "djshop.jobs:send_receipt"


@pytest.fixture(scope="module")
def django_db(tmp_path_factory, redis_server):
    """Django set up once in this process, with the shop's settings and a migrated database."""
    database = tmp_path_factory.mktemp("djshop") / "shop.sqlite3"
    os.environ.update({"DJANGO_SETTINGS_MODULE": "djshop.settings", "DJSHOP_DATABASE": str(database),
                       "QUEUEFLEET_REDIS_URL": redis_server.url})
    sys.path.insert(0, str(SRC))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    yield database
    sys.path.remove(str(SRC))
    for key in ("DJANGO_SETTINGS_MODULE", "DJSHOP_DATABASE", "QUEUEFLEET_REDIS_URL"):
        os.environ.pop(key, None)


@pytest.fixture
def client(django_db, r):
    from django.test import Client

    from djshop.models import Order, Product

    Order.objects.all().delete()
    Product.objects.update_or_create(sku="tea", defaults={"stock": 5})
    return Client()


@pytest.fixture
def worker(django_db, redis_url, sqlite_url, tmp_path):
    """The real `queue` command with the shop's code and settings, as a release would have them."""
    cli = QueueCli(redis_url, sqlite_url, tmp_path)
    cli.env.update({"PYTHONPATH": os.pathsep.join([str(SRC), cli.env["PYTHONPATH"]]), "QUEUEFLEET_JOBS": "djshop.jobs",
                    "DJANGO_SETTINGS_MODULE": "djshop.settings", "DJSHOP_DATABASE": str(django_db)})
    cli.run("migrate")
    yield cli
    cli.close()


def orders() -> list[tuple[int, str, int]]:
    from djshop.models import Order

    return list(Order.objects.order_by("pk").values_list("pk", "email", "receipts_sent"))


def test_an_order_pushes_its_receipt_on_commit_and_a_worker_sends_it_once(client, worker, r):
    response = client.post("/orders", {"email": "ada@example.com", "sku": "tea", "quantity": 2},
                           content_type="application/json")
    assert response.status_code == 201, response.content
    order = response.json()["order"]
    assert orders() == [(order, "ada@example.com", 0)]
    assert r.llen("queuefleet:queue:default") == 1

    result = worker.run("work", "--stop-when-empty", "--init", "django:setup")
    assert result.stdout.count(f"DONE     receipt-{order} {RECEIPT}") == 1, result.stdout + result.stderr
    assert orders() == [(order, "ada@example.com", 1)]
    assert "no failed jobs" in worker.run("failed").stdout


def test_an_order_that_rolls_back_pushes_nothing(client, r):
    response = client.post("/orders", {"email": "bob@example.com", "sku": "tea", "quantity": 9},
                           content_type="application/json")
    assert response.status_code == 409 and response.json() == {"error": "not enough tea in stock"}
    assert orders() == []
    assert r.llen("queuefleet:queue:default") == 0 and r.zcard("queuefleet:queue:default:delayed") == 0


def test_the_push_waits_for_the_outermost_commit(client, r):
    """The view's atomic block inside an outer one (ATOMIC_REQUESTS, a service calling the view's
    code): on_commit waits for the real commit, not the block's end."""
    from django.db import transaction

    with transaction.atomic():
        response = client.post("/orders", {"email": "c@example.com", "sku": "tea", "quantity": 1},
                               content_type="application/json")
        assert response.status_code == 201
        assert r.llen("queuefleet:queue:default") == 0, "nothing before the commit"
    assert r.llen("queuefleet:queue:default") == 1


def open_files(pid: int) -> list[str]:
    names = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            names.append(os.readlink(fd))
        except OSError:  # closed meanwhile
            pass
    return names


def test_a_django_worker_holds_no_database_connection_between_jobs(client, worker):
    """django_job closes the job's connection after it (CONN_MAX_AGE=0), as Django does after a
    request: an idle worker has no connection left for the database server to drop."""
    proc = worker.spawn("--sleep", "0.2", "--init", "django:setup")
    try:
        client.post("/orders", {"email": "d@example.com", "sku": "tea", "quantity": 1}, content_type="application/json")
        order = orders()[0][0]
        proc.wait_log(f"DONE     receipt-{order} {RECEIPT}")
        assert str(worker.env["DJSHOP_DATABASE"]) not in open_files(proc.pid)
        assert orders()[0][2] == 1
    finally:
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0
