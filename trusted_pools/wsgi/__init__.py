"""Modules WSGI servers import; each builds its application on import."""
