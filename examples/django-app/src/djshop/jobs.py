"""The jobs the workers run (queue_worker_jobs: [djshop.jobs]). Importing this module imports
the models, so the workers call django.setup() first: queue_worker_init: django:setup."""

from django.db.models import F
from django.utils import timezone

from .models import Order
from .queueing import django_job


@django_job
def send_receipt(data):
    order = Order.objects.get(pk=data["order"])  # committed before the push: it exists
    # The mail itself would go here (django.core.mail.send_mail). Handlers may run twice
    # (delivery is at least once): a real one would check receipt_sent_at first.
    Order.objects.filter(pk=order.pk).update(receipts_sent=F("receipts_sent") + 1, receipt_sent_at=timezone.now())
