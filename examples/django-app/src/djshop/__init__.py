"""A tiny Django shop: POST /orders stores an order and pushes the job that sends its receipt
with transaction.on_commit; queuefleet workers run djshop.jobs, started with --init django:setup."""
