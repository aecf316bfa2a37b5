# gunicorn config for running the API by hand: gunicorn -c deploy/gunicorn.conf.py 'service.api.app:gunicorn_app()'
# The settings live in the package so the CLI, the Docker image and this file share them.
from service.api.gunicorn_conf import *  # noqa: F403
