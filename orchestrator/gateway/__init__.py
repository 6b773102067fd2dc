"""The aiohttp gateway: routes, auth and error middleware, OpenAPI. Handlers stay thin."""
