"""podjobs.surface.api: the HTTP API (issue 7).

`podjobs api --host 127.0.0.1 --port 8080 --app MODULE --tokens FILE` serves it. Modules:
`app` (`create_app`: authentication, error answers, the route groups), `routes_jobs`
(enqueue, monitor, cancel), `routes_ops` (operator views, health), `waiting` (a
synchronous enqueue's wait), `service` (enqueue, find, cancel, pods: the side effects),
`auth` (bearer tokens), `models` (the OpenAPI schemas), `responses` (JSON answers); pure:
`body` (the enqueue body), `negotiation` (Expect/Prefer), `views` (the status document),
`answers` (status codes and headers). `podjobs api` is podjobs.surface.cmd_api.
"""
