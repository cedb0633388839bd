"""gunicorn settings for the `web` service: `gunicorn --config docker/gunicorn.conf.py
skeldir.wsgi:application`. Command-line options override these (docker-compose.yml sets
--workers)."""

bind = "0.0.0.0:8000"
workers = 2
timeout = 30
graceful_timeout = 30
# gunicorn's control socket (a Unix socket under $HOME) is not used; the image's home is
# read-only to the app user.
control_socket_disable = True

# gunicorn's own lines (start-up, worker boots and timeouts) as JSON too. gunicorn merges
# this over its defaults one top-level key at a time, hence the complete sections; its
# loggers do not propagate, or Django's root handler would print each line twice.
logconfig_dict = {
    "root": {"level": "INFO", "handlers": []},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
        # No access log: skeldir.logs.RequestLogContextMiddleware logs every request as JSON
        # with its request, correlation and tenant ids, and never the query string, which
        # gunicorn's access line would print.
        "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
    },
    "handlers": {
        "error_console": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stderr",
        },
    },
    "formatters": {"json": {"()": "skeldir.logs.JsonFormatter"}},
}
