"""podjobs.api: the HTTP API (issue 7).

`podjobs api --host 127.0.0.1 --port 8080 --app MODULE --tokens FILE` serves it. Modules:
`app` (FastAPI routes), `service` (enqueue, find, cancel, pods: the side effects),
`monitor` (pure: request parsing, Expect/Prefer, the status document and answers),
`auth` (bearer tokens), `models` (the OpenAPI schemas), `cli` (`podjobs api`).
"""
