"""The web dashboard, served under /ui by `podjobs api` and alone by `podjobs web`.

`session` (pure: the signed session cookie and its CSRF token), `fleet` (every read and
action across pods, through the API's `Service` and the operator code of ops, iteration,
scheduler and pods), `routes` (the pages and forms), `docs` (Swagger UI from local files),
templates/ (Jinja2) and static/ (CSS, the small live-refresh script).
"""
