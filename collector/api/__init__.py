"""The collector's HTTP API.

`operations` declares each operation once (path, role, models); `auth` and `keys` say who
calls; `problems` shapes every error; `headers` adds security headers, CORS and request
limits; `contract` writes the OpenAPI document from the declarations; `routes` puts it all
on the application; one module per resource holds its operations.
"""
