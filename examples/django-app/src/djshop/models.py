from django.db import models


class Product(models.Model):
    sku = models.CharField(max_length=32, primary_key=True)
    stock = models.PositiveIntegerField()


class Order(models.Model):
    email = models.EmailField()
    sku = models.CharField(max_length=32)
    quantity = models.PositiveIntegerField()
    receipts_sent = models.PositiveIntegerField(default=0)
    receipt_sent_at = models.DateTimeField(null=True)
