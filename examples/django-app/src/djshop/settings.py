"""Settings from the environment, as on a server: the web app's and the workers' (the workers get
these variables from queue_worker_env, with DJANGO_SETTINGS_MODULE=djshop.settings)."""

import os
from pathlib import Path

SECRET_KEY = os.environ.get("DJSHOP_SECRET_KEY", "an-example-only-key")
DEBUG = False
ALLOWED_HOSTS = os.environ.get("DJSHOP_ALLOWED_HOSTS", "localhost,127.0.0.1,testserver").split(",")
INSTALLED_APPS = ["djshop"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "djshop.urls"
WSGI_APPLICATION = "djshop.wsgi.application"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJSHOP_DATABASE", str(Path.cwd() / "djshop.sqlite3")),
        # Django's default: a connection lives for one request, or (in a worker) one job, see jobs.py.
        "CONN_MAX_AGE": 0,
    }
}

QUEUEFLEET_REDIS_URL = os.environ.get("QUEUEFLEET_REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUEFLEET_PREFIX = os.environ.get("QUEUEFLEET_PREFIX", "queuefleet")
