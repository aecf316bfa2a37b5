"""Every route's operationId is its function's name: a generated client's `predict`, `ready`, ...
(each router is built with it, since its routes go on the app as they are: app.add_routes)."""

from fastapi.routing import APIRoute


def operation_id(route: APIRoute) -> str:
    return route.name
