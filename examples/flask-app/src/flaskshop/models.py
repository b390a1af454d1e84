from __future__ import annotations

from datetime import datetime

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column

db = SQLAlchemy()


class Product(db.Model):
    sku: Mapped[str] = mapped_column(primary_key=True)
    stock: Mapped[int]


class Order(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str]
    sku: Mapped[str]
    quantity: Mapped[int]
    receipts_sent: Mapped[int] = mapped_column(default=0)
    receipt_sent_at: Mapped[datetime | None]
