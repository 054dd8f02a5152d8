"""The controller's REST/JSON API under ``/api/v1/`` (docs/rest-api.md), served beside gRPC in its event loop.

- ``app.py``: the aiohttp server, reading requests, answering in JSON;
- ``routes.py``: each route, whose roles apply, and its handler (an adapter
  to the one implementation gRPC also runs);
- ``schemas.py`` and ``validate.py``: the JSON Schemas of requests and
  responses, and the check of requests against them;
- ``shapes.py``: the JSON of each answer; ``errors.py``: refusals and their
  HTTP status; ``auth.py``: tokens, roles, TLS; ``openapi.py``: the OpenAPI
  3.1 document; ``metrics.py``.
"""
