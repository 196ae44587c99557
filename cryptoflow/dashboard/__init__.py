"""The built-in live page: ``cryptoflow dashboard`` serves charts over the serving tables.

``queries`` holds every SQL statement of the page, ``data`` runs them with the read-only
login, ``server`` is a small stdlib HTTP server, ``page.html`` draws the charts (inline SVG,
nothing fetched from the internet).
"""
