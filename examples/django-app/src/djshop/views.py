import json

from django.db import transaction
from django.db.models import F
from django.http import JsonResponse
from django.views.decorators.http import require_POST

from .models import Order, Product
from .queueing import push_on_commit


class OutOfStock(Exception):
    pass


@require_POST
def place_order(request):
    body = json.loads(request.body)
    try:
        with transaction.atomic():
            order = Order.objects.create(email=body["email"], sku=body["sku"], quantity=int(body["quantity"]))
            # Pushed when the atomic block commits, so the worker finds the order; dropped with it on a rollback.
            push_on_commit("djshop.jobs:send_receipt", {"order": order.pk}, id=f"receipt-{order.pk}")
            taken = Product.objects.filter(sku=order.sku, stock__gte=order.quantity).update(stock=F("stock") - order.quantity)
            if taken != 1:
                raise OutOfStock(order.sku)
    except OutOfStock as exc:
        return JsonResponse({"error": f"not enough {exc} in stock"}, status=409)
    return JsonResponse({"order": order.pk}, status=201)
