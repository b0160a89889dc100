"""Request handlers: each checks its policy rule first, then validates,
then acts. A handler returns ``(status, body)``; ``body`` None means an
empty response."""
