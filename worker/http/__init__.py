"""The HTTP front door: the aiohttp application (sessions API, health, metrics), the voice
WebSocket route, the examiner's monitor, the student page and its static files, and `serve()`."""
