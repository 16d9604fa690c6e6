"""The HTTP layer of the API: dependencies, routes, error translation, the edge middleware.

Laid out like FastAPI's full-stack template: ``deps`` holds the dependencies (as
``Annotated`` aliases), ``routes`` a module per area, ``errors`` the translation of
exceptions into the API's error bodies; :func:`socialads.serving.app.create_app` assembles
them.
"""
