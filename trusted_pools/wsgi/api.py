"""trusted-pools-api for uwsgi / mod_wsgi:
``uwsgi --module trusted_pools.wsgi.api:application``."""

from trusted_pools.api import wsgi

application = wsgi.init_application()
