from __future__ import annotations

from flask import Blueprint, request
from sqlalchemy import update

from .models import Order, Product, db
from .queueing import push_after_commit

bp = Blueprint("shop", __name__)


@bp.post("/orders")
def place_order():
    body = request.get_json()
    order = Order(email=body["email"], sku=body["sku"], quantity=int(body["quantity"]))
    db.session.add(order)
    db.session.flush()  # gives the order its id, inside the transaction
    push_after_commit("flaskshop.jobs:send_receipt", {"order": order.id}, id=f"receipt-{order.id}")
    taken = db.session.execute(
        update(Product)
        .where(Product.sku == body["sku"], Product.stock >= order.quantity)
        .values(stock=Product.stock - order.quantity)
    ).rowcount
    if taken != 1:
        db.session.rollback()  # the order is gone, and so is its receipt job: nothing is pushed
        return {"error": f"not enough {body['sku']} in stock"}, 409
    db.session.commit()  # the receipt job is pushed now
    return {"order": order.id}, 201
