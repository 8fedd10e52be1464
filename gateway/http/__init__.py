"""The HTTP front end (KServe v2 REST with Triton's extensions) on aiohttp: app, codec
(JSON and binary tensors), routes, loop routes."""
